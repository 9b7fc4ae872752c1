"""The exception tree of magpie and the error codes it answers with.

Every error a client can see is a ``MagpieError``; the HTTP layer maps it to
``{"code": ..., "message": ...}`` in one place (``magpie.api.http.failures``)::

    MagpieError
    ├── Unauthorized (401)
    │   ├── ApiKeyNotFound        API_KEY_NOT_FOUND
    │   ├── InvalidApiKey         INVALID_API_KEY
    │   └── InvalidAdminToken     UNAUTHORIZED
    ├── InvalidRequest (400)      INVALID_REQUEST
    │   ├── EmptyIdentifier       EMPTY_IDENTIFIER
    │   ├── ExceedUserMaxLength   EXCEED_USER_MAX_LENGTH
    │   ├── CampaignNotFound      CAMPAIGN_NOT_FOUND
    │   ├── InvalidPhoneNumber    INVALID_PHONE_NUMBER
    │   ├── InvalidCampaign       INVALID_CAMPAIGN
    │   ├── IncompleteBody        INCOMPLETE_BODY (shorter than its Content-Length)
    │   └── StorageRefused        INVALID_REQUEST (the database refused the data)
    ├── Forbidden (403)           FORBIDDEN
    ├── NotFound (404)            NOT_FOUND
    ├── MethodNotAllowed (405)    METHOD_NOT_ALLOWED
    ├── RequestTimeout (408)      REQUEST_TIMEOUT
    ├── Conflict (409)            CONFLICT
    ├── IdempotencyKeyReused (422) IDEMPOTENCY_KEY_REUSED
    ├── PayloadTooLarge (413)     PAYLOAD_TOO_LARGE
    ├── RateLimited (429)         RATE_LIMITED
    └── ServiceUnavailable (503)  SERVICE_UNAVAILABLE

Provider errors live apart (``magpie.providers.base``): they never reach a client,
they become delivery outcomes.
"""

from __future__ import annotations


class MagpieError(Exception):
    """Base of every error magpie reports to a client."""

    status = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal error"
    # Every problem found, when there are several (a campaign definition's): each a field and a message.
    every_problem: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class Unauthorized(MagpieError):
    status = 401
    code = "UNAUTHORIZED"
    default_message = "Unauthorized"


class ApiKeyNotFound(Unauthorized):
    code = "API_KEY_NOT_FOUND"
    default_message = "The API key must be included in the header"


class InvalidApiKey(Unauthorized):
    code = "INVALID_API_KEY"
    default_message = "Invalid API key"


class InvalidAdminToken(Unauthorized):
    code = "UNAUTHORIZED"
    default_message = "A valid admin bearer token is required"


class InvalidRequest(MagpieError):
    status = 400
    code = "INVALID_REQUEST"
    default_message = "Invalid request"


class EmptyIdentifier(InvalidRequest):
    code = "EMPTY_IDENTIFIER"
    default_message = "At least one identifier should be given"


class ExceedUserMaxLength(InvalidRequest):
    code = "EXCEED_USER_MAX_LENGTH"
    default_message = "Max input length exceeded"


class CampaignNotFound(InvalidRequest):
    """No campaign of a channel has the key; the message names the channel as Hackle does.

    >>> CampaignNotFound(channel="kakao").message
    'Could not find kakao message campaign with the given key'
    >>> CampaignNotFound(channel=None).message  # asked without a channel (admin API, CLI)
    'Could not find campaign with the given key'
    """

    code = "CAMPAIGN_NOT_FOUND"
    default_message = "Could not find push message campaign with the given key"

    def __init__(self, message: str | None = None, *, channel: str | None = "push") -> None:
        kind = f"{channel} message campaign" if channel else "campaign"
        super().__init__(message or f"Could not find {kind} with the given key")


class InvalidPhoneNumber(InvalidRequest):
    code = "INVALID_PHONE_NUMBER"
    default_message = "The phone number is not a valid E.164 number"


class InvalidCampaign(InvalidRequest):
    code = "INVALID_CAMPAIGN"
    default_message = "The campaign definition is invalid"


class IncompleteBody(InvalidRequest):
    """The body ended (the client disconnected) before its declared length: it is never applied."""

    code = "INCOMPLETE_BODY"
    default_message = "The request body is shorter than its Content-Length"


class StorageRefused(InvalidRequest):
    """The database refused a request's data; retrying the same data cannot succeed."""

    default_message = "The request holds data the storage cannot keep"


class Forbidden(MagpieError):
    status = 403
    code = "FORBIDDEN"
    default_message = "The form is missing its CSRF token or it does not match this session"


class NotFound(MagpieError):
    status = 404
    code = "NOT_FOUND"
    default_message = "Not found"


class MethodNotAllowed(MagpieError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed"


class RequestTimeout(MagpieError):
    status = 408
    code = "REQUEST_TIMEOUT"
    default_message = "The request did not arrive in time"


class Conflict(MagpieError):
    status = 409
    code = "CONFLICT"
    default_message = "Conflict"


class IdempotencyKeyReused(MagpieError):
    """An ``Idempotency-Key`` already used for a different trigger body."""

    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was already used with a different request body"


class PayloadTooLarge(MagpieError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large"


class RateLimited(MagpieError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests for this API key"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(MagpieError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "Storage is unavailable, retry later"
