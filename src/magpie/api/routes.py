"""The route table of the lean router: every Hackle-compatible and magpie data endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magpie.api import profiles

if TYPE_CHECKING:
    from magpie.app import MagpieApp


def install(app: MagpieApp) -> None:
    app.add_route("POST", "/v1/properties", profiles.update_properties)
    app.add_route("POST", "/v1/properties/phone-numbers", profiles.set_phone_number)
    app.add_route("DELETE", "/v1/properties/phone-numbers", profiles.delete_phone_number)
    app.add_route("POST", "/v1/push-subscriptions", profiles.push_subscriptions)
    app.add_route("POST", "/v1/kakao-subscriptions", profiles.kakao_subscriptions)
    app.add_route("POST", "/v1/sms-subscriptions", profiles.sms_subscriptions)
