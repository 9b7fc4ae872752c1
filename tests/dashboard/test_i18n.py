"""The dashboard in English and Korean: every template's text goes through the catalogue and has its
Korean; the language follows Accept-Language, is switched from the header and remembered; reason
codes are explained beside the code in both languages. Over the real ASGI app, and in Chromium."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader

from magpie.dashboard import present
from magpie.dashboard.catalogue import DYNAMIC, KO
from magpie.dashboard.i18n import choose, explanation
from magpie.domain import reasons
from tests.chromium import DESKTOP, PHONE
from tests.dashboard.served import Magpie, served
from tests.dashboard.test_pages import sent  # noqa: F401 (the fixture)
from tests.dashboard.test_session import _send, _sign_in
from tests.dispatch.test_messages import run, send, setup, sms, user
from tests.fakes.nhn import FakeNhn
from tests.support import AppClient, Env

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "magpie" / "dashboard" / "templates"
# Words that stay as they are in every language: names, units, formats.
UNTRANSLATED = {"magpie", "KakaoTalk", "CSV", "pp", "EUC", "KR"}


def _messages(source: str) -> set[str]:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), extensions=["jinja2.ext.i18n"])
    found: set[str] = set()
    for _, _, message in env.extract_translations(source):
        for text in message if isinstance(message, tuple) else (message,):
            if isinstance(text, str):
                found.add(text)
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_every_text_of_the_template_goes_through_the_catalogue(name: str) -> None:
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    missing = sorted(m for m in _messages(source) if m not in KO)
    assert missing == [], f"{name}: no Korean for {missing}"
    # What is left once expressions, statements, comments and tags are gone is the template's own
    # text, and the attribute values people read: none of it may be words outside ``_()``.
    readable = re.findall(r'(?:aria-label|placeholder|title|alt|data-label)="([^"]*)"', source)
    text = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", " ", source, flags=re.S)
    text = re.sub(r"<script.*?</script>|<[^>]+>|&\w+;", " ", text, flags=re.S)
    for chunk in [text, *(re.sub(r"{{.*?}}", " ", r) for r in readable)]:
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]+", chunk) if w not in UNTRANSLATED]
        assert words == [], f"{name}: text outside _(): {words[:10]}"


def test_texts_from_python_and_every_reason_have_korean() -> None:
    assert [t for t in DYNAMIC if t not in KO] == []
    # The labels present.py hands the templates: words are in DYNAMIC, names (NHN Cloud, LMS) stay as they are.
    labels = {*present.CHANNEL_LABELS.values(), *present.GATEWAY_LABELS.values()}
    labels |= set(present.PUSH_PROVIDER_LABELS.values())
    labels |= {present.channel_label({"channel": "kakao", "type": t}) for t in ("alimtalk", "brand")}
    labels |= {present.TYPE_LABELS["alimtalk"], present.TYPE_LABELS["brand"]}
    assert sorted(t for t in labels if t not in DYNAMIC) == ["FCM / APNs", "NHN Cloud", "Solapi"]
    # One table of reasons (magpie.domain.reasons), each sentence translated.
    assert [t for t in reasons.sentences() if not KO.get(t) or KO[t] == t] == []
    assert explanation("NO_CONSENT", "en") == reasons.describe("NO_CONSENT")
    assert explanation("NO_CONSENT", "ko") == "사용자가 이 메시지에 필요한 수신 동의를 하지 않았습니다."
    assert explanation("HTTP_503", "ko") == "발송 수단이 사유 없이 HTTP 503로 응답했습니다."
    assert explanation("NHN_-1001", "en") == "NHN Cloud refused the message with its result code -1001."
    assert explanation("3040", "ko") == "발송 수단 자체의 오류 코드입니다."  # a gateway's own code
    assert explanation(None, "ko") == ""


def test_catalogue_holds_only_texts_the_pages_use() -> None:
    """A text whose page changed is not left behind in the catalogue (nor its Korean out of date)."""
    used = set(DYNAMIC) | set(reasons.sentences())
    for path in TEMPLATES.glob("*.html"):
        used |= _messages(path.read_text(encoding="utf-8"))
    assert sorted(t for t in KO if t not in used) == []


@pytest.mark.parametrize(
    ("cookie", "header", "chosen"),
    [
        pytest.param(None, "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko", id="korean-browser"),
        pytest.param(None, "en-US,en;q=0.9,ko;q=0.8", "en", id="english-browser"),
        pytest.param(None, "ja-JP, ko;q=0.5, en;q=0.3", "ko", id="best-supported"),
        pytest.param(None, "fr-FR", "en", id="unsupported"),
        pytest.param(None, "ko;q=0, en", "en", id="refused"),
        pytest.param(None, "ko;q=abc", "en", id="bad-weight"),
        pytest.param(None, None, "en", id="none"),
        pytest.param("ko", "en-US", "ko", id="cookie-wins"),
        pytest.param("xx", "ko", "ko", id="bad-cookie"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, chosen: str) -> None:
    assert choose(cookie, header) == chosen


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_pages_follow_accept_language_and_the_remembered_choice(client: AppClient, env: Env) -> None:
    cookies = _sign_in(client, env)
    url = f"/dashboard/{env.name}/"
    korean = _send(client, "GET", url, cookies=cookies, headers={"accept-language": "ko-KR,ko;q=0.9"})
    assert '<html lang="ko">' in korean.text
    assert "개요" in korean.text and "이전과 비교" in korean.text and "로그아웃" in korean.text
    assert "Sign out" not in korean.text
    english = _send(client, "GET", url, cookies=cookies, headers={"accept-language": "en-US"})
    assert '<html lang="en">' in english.text and "Sign out" in english.text and "로그아웃" not in english.text
    switch = re.search(r'<a class="lang" href="([^"]+)"', english.text)
    assert switch is not None and "한국어" in english.text
    href = switch.group(1).replace("&amp;", "&")
    assert href == f"/dashboard/language?to=ko&next=%2Fdashboard%2F{env.name}%2F"

    chosen = _send(client, "GET", href, follow_redirects=False)
    assert chosen.status_code == 303 and chosen.headers["location"] == url
    set_cookie = chosen.headers["set-cookie"].lower()
    assert (
        set_cookie.startswith("magpie_lang=ko;")
        and "max-age=31536000" in set_cookie
        and "path=/dashboard" in set_cookie
    )
    remembered = _send(
        client, "GET", url, cookies={**cookies, "magpie_lang": "ko"}, headers={"accept-language": "en-US"}
    )
    assert "로그아웃" in remembered.text

    login = _send(client, "GET", "/dashboard/login", headers={"accept-language": "ko"})
    assert "관리자 토큰" in login.text
    for target in ("https://evil.example/", "//evil.example/", "/elsewhere"):
        away = _send(client, "GET", f"/dashboard/language?to=en&next={target}", follow_redirects=False)
        assert away.headers["location"] == "/dashboard/", target
    ignored = _send(client, "GET", "/dashboard/language?to=fr", follow_redirects=False)
    assert ignored.status_code == 303 and "set-cookie" not in ignored.headers


def test_reason_codes_are_explained_beside_the_code_in_both_languages(client: AppClient, env: Env) -> None:
    with FakeNhn() as nhn:
        setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": nhn.config()}}, sms(purpose="INFORMATION"))
        user(client, env, "u1")
        user(client, env, "no-phone", phone=None)
        nhn.drop_after_accept = nhn.fail_queries = 100
        dispatch_id = send(client, env, "sms", 12, [{"userId": "u1"}, {"userId": "no-phone"}, {"userId": "ghost"}])
        run(client, max_delivery_attempts=1)
    cookies = _sign_in(client, env)
    url = f"/dashboard/{env.name}/dispatches/{dispatch_id}"
    english = _text(_send(client, "GET", url, cookies=cookies).text)
    assert f"GATEWAY_UNCONFIRMED {reasons.describe('GATEWAY_UNCONFIRMED')}" in english
    assert f"NO_PHONE_NUMBER 1 {reasons.describe('NO_PHONE_NUMBER')}" in english
    assert f"UNKNOWN_USER {reasons.describe('UNKNOWN_USER')}" in english
    korean = _text(_send(client, "GET", url, cookies={**cookies, "magpie_lang": "ko"}).text)
    assert f"GATEWAY_UNCONFIRMED {KO[reasons.REASONS['GATEWAY_UNCONFIRMED']]}" in korean
    assert "NO_PHONE_NUMBER 1 사용자의 전화번호가 등록되어 있지 않습니다." in korean
    assert "UNKNOWN_USER 이 사용자 ID나 기기 ID의 프로필이 없습니다." in korean
    assert reasons.describe("NO_PHONE_NUMBER") not in korean


# -- in the browser ---------------------------------------------------------------------------------

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@pytest.fixture(scope="module")
def magpie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Magpie]:
    with served(tmp_path_factory.mktemp("i18n") / "data") as instance:
        yield instance


@pytest.fixture
def korean_page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A browser asking for Korean, and the console errors its pages report."""
    context = browser.new_context(viewport=DESKTOP, locale="ko-KR")
    context.set_default_timeout(15_000)
    context.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=b""))  # not these pages'
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, errors
    context.close()


@pytest.mark.browser
def test_korean_dashboard_in_the_browser_is_switchable_and_remembered(
    magpie: Magpie, korean_page: tuple[Any, list[str]]
) -> None:
    page, errors = korean_page
    page.goto(magpie.url + "/dashboard/")
    assert page.get_by_label("관리자 토큰").is_visible()
    page.get_by_label("관리자 토큰").fill(magpie.token)
    page.get_by_role("button", name="로그인").click()
    page.wait_for_load_state()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path in ("/", "/campaigns", "/campaigns/1", "/users", "/inbox", "/consent", "/gateways", "/compare", "/keys"):
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            response = page.goto(magpie.url + "/dashboard/development" + path)
            assert response is not None and response.status == 200, path
            assert page.locator("html").get_attribute("lang") == "ko"
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} overflows by {overflow}px at {size['width']}px in Korean"
        name = path.strip("/").replace("/", "-") or "overview"
        page.screenshot(path=str(SHOTS / f"dashboard-ko-{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    page.goto(magpie.url + "/dashboard/development/")
    assert page.get_by_role("link", name="개요").is_visible()
    page.screenshot(path=str(SHOTS / "dashboard-ko-overview.png"), full_page=True)

    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.url == magpie.url + "/dashboard/development/"
    assert page.get_by_role("link", name="Overview").is_visible()
    page.get_by_role("link", name="Campaigns").click()  # remembered on the next page, whatever the browser asks
    assert page.get_by_role("heading", name=re.compile("Campaigns")).is_visible()
    page.get_by_role("link", name="한국어").click()
    assert page.get_by_role("heading", name=re.compile("캠페인")).is_visible()
    assert errors == []


def test_campaign_page_in_korean_words_its_caps_audience_night_rule_and_chart(
    client: AppClient,
    env: Env,
    sent: dict[str, Any],  # noqa: F811 (the fixture)
) -> None:
    cookies = _sign_in(client, env)
    url = f"/dashboard/{env.name}/campaigns/3"
    korean = _send(client, "GET", url, cookies={**cookies, "magpie_lang": "ko"}).text
    words = html.unescape(_text(korean))
    assert "속성 “grade”: GOLD 중 하나" in words and "property “grade”" not in words
    assert "사용자당 1일에 모든 채널의 마케팅 메시지 최대 3건" in words and "at most" not in words
    assert "발송률" in words and "Sent rate" not in words
    assert "Night time" not in words and "Marketing rules applied" not in words
    legend = re.search(r"data-legend='([^']*)'", korean)
    assert legend is not None and json.loads(html.unescape(legend.group(1)))["sent"] == "발송"
    english = html.unescape(_text(_send(client, "GET", url, cookies=cookies).text))
    assert (
        "property “grade” is GOLD" in english
        and "at most 3 marketing messages of any channel per user in 1 day" in english
    )
