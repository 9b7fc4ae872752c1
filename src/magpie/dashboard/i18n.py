"""The dashboard in English and Korean: Jinja2's i18n extension over one catalogue in this package.

The language of a page is the one its reader chose (the ``magpie_lang`` cookie, set by the switch in
the header), else the first of English and Korean in the browser's ``Accept-Language``, else
English. Templates write their text in English inside ``_()`` (or ``{% trans %}``); the Korean is
``catalogue.KO``. Reason codes (``NO_CONSENT``, ``HTTP_500``, …) are shown as they are, with
``code|reason`` beside them in words: ``magpie.domain.reasons``' sentence, translated.

>>> choose(None, "ko-KR,ko;q=0.9,en-US;q=0.8")
'ko'
>>> choose(None, "fr-FR, en;q=0.5, ko;q=0.4")
'en'
>>> choose("en", "ko")
'en'
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, Template, pass_context
from jinja2.runtime import Context
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from magpie.dashboard.catalogue import KO
from magpie.domain import reasons

LANGUAGES = ("en", "ko")
DEFAULT = "en"
COOKIE = "magpie_lang"
COOKIE_SECONDS = 365 * 24 * 3600
NAMES = {"en": "English", "ko": "한국어"}


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The page's language: the cookie's, else the best of ``Accept-Language``, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and weight > 0:
            ranked.append((-weight, position, primary))
    return min(ranked)[2] if ranked else DEFAULT


def request_language(request: Request) -> str:
    """The language of ``request``, worked out once per request."""
    found: str | None = getattr(request.state, "language", None)
    if found is None:
        found = choose(request.cookies.get(COOKIE), request.headers.get("accept-language"))
        request.state.language = found
    return found


def _request(context: Context) -> Request | None:
    view = context.get("view")
    found = getattr(view, "request", None) if view is not None else context.get("request")
    return found if isinstance(found, Request) else None


# The language of the page being rendered: set around each render (``Localized``), so that macros
# imported without the page's context translate too.
_current: ContextVar[str] = ContextVar("dashboard_language", default=DEFAULT)


class Localized(Template):
    """A template that renders in the language of the request it is given (as ``view`` or ``request``)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        values = dict(*args, **kwargs)
        view = values.get("view")
        request = getattr(view, "request", None) if view is not None else values.get("request")
        token = _current.set(request_language(request) if isinstance(request, Request) else DEFAULT)
        try:
            return super().render(*args, **kwargs)
        finally:
            _current.reset(token)


def current() -> str:
    return _current.get()


def translate(message: str, lang: str) -> str:
    return KO.get(message, message) if lang == "ko" else message


def gettext(message: str) -> str:
    return translate(message, _current.get())


def ngettext(singular: str, plural: str, n: int) -> str:
    return translate(singular if n == 1 else plural, _current.get())


def explanation(code: str | None, lang: str) -> str:
    """A reason code in words in ``lang`` ("" for none): the sentence of ``magpie.domain.reasons``,
    through the catalogue."""
    return reasons.describe(code, words=lambda sentence: translate(sentence, lang))


def explain(code: str | None) -> str:
    """A reason code in words in the language of the page being rendered (the ``reason`` filter)."""
    return explanation(code, _current.get())


@pass_context
def switch(context: Context) -> dict[str, str]:
    """The header's link to the other language, coming back to this page."""
    now = _current.get()
    other = "ko" if now == "en" else "en"
    request = _request(context)
    here = "/dashboard/"
    if request is not None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "href": f"/dashboard/language?to={other}&next={quote(here, safe='')}",
        "label": NAMES[other],
        "lang": other,
        "current": now,
    }


def install(templates: Environment) -> None:
    """Give the dashboard's templates ``_``, ``ngettext``, the ``reason`` filter and the language switch."""
    templates.template_class = Localized
    templates.add_extension("jinja2.ext.i18n")
    templates.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    templates.filters["reason"] = explain
    templates.globals["language_switch"] = switch
    templates.globals["page_language"] = current


async def set_language(request: Request) -> Response:
    """Remember the chosen language (a cookie for a year) and go back to the page."""
    wanted = request.query_params.get("to", "")
    target = request.query_params.get("next") or "/dashboard/"
    if not target.startswith("/dashboard") or target.startswith("//") or "\\" in target:
        target = "/dashboard/"
    response = RedirectResponse(target, status_code=303)
    if wanted in LANGUAGES:
        response.set_cookie(
            COOKIE,
            wanted,
            max_age=COOKIE_SECONDS,
            path="/dashboard",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
    return response


def routes() -> list[BaseRoute]:
    return [Route("/language", set_language, methods=["GET"])]
