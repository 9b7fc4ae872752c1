"""Campaign files are checked whole before anything is applied, and apply all or nothing.

Every problem is reported at once as ``FILE:LINE:COLUMN: campaign KEY: problem``; YAML syntax errors
keep the line and column the parser gives; the multi-campaign example of docs/channels.md applies as
pasted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from magpie.config import Settings
from magpie.errors import InvalidCampaign
from magpie.store import campaigns
from magpie.store.db import Database
from tests.support import ROOT, AppClient, Env, magpie_cli, make_env

CHANNELS = ROOT / "docs" / "channels.md"

BROKEN = """\
- key: 31
  name: Typo'd field
  status: ACTIVE
  purpse: INFORMATION
  message: {title: t, body: b}
- key: 32
  name: Bad choices
  status: ACTIV
  purpose: INFORMATION
  provider: fcm
  message:
    title: "{{ user_properties.name | default: }}"
    body: b
- key: 33
  name: Marketing SMS without an opt-out number
  status: ACTIVE
  channel: sms
  purpose: MARKETING
  message: {text: "sale"}
- key: 31
  name: Same key again
  purpose: INFORMATION
  message: {title: t, body: b}
"""


def _env_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert magpie_cli("env", "create", "development", data_dir=data).returncode == 0
    return data


def test_every_problem_of_a_file_is_reported_at_once_with_its_place_and_nothing_is_applied(tmp_path: Path) -> None:
    data = _env_dir(tmp_path)
    path = tmp_path / "campaigns.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}:4:3: campaign 31: unknown campaign field 'purpse' (did you mean 'purpose'?)",
        f"{path}:1:3: campaign 31: purpose must be one of MARKETING, INFORMATION, got None",
        f"{path}:8:11: campaign 32: status must be one of DRAFT, ACTIVE, PAUSED, ARCHIVED, got 'ACTIV' "
        "(did you mean 'ACTIVE'?)",
        f"{path}:10:13: campaign 32: provider must be one of sandbox, push, webhook, got 'fcm' "
        "(FCM and APNs are both provider: push, chosen by each device's token)",
        f"{path}:12:12: campaign 32: message.title: template error: the filter 'default' has ':' but no argument",
        f"{path}:14:3: campaign 33: a marketing SMS needs the free opt-out number: set smsOptOutNumber (080-...) "
        "in the environment",
        f"{path}:20:8: campaign 31: key 31 is also the key of campaign #1 in this file",
        f"magpie: INVALID_CAMPAIGN: {path}: 7 problems; nothing applied",
    ]
    assert json.loads(magpie_cli("campaign", "list", "--json", data_dir=data).stdout) == []
    as_json = magpie_cli("campaign", "apply", "-f", str(path), "--json", data_dir=data)
    body = json.loads(as_json.stderr)
    assert body["code"] == "INVALID_CAMPAIGN" and len(body["problems"]) == 7
    assert body["problems"][2] == {
        "file": str(path),
        "line": 8,
        "column": 11,
        "campaignKey": 32,
        "index": 1,
        "field": "status",
        "message": "status must be one of DRAFT, ACTIVE, PAUSED, ARCHIVED, got 'ACTIV' (did you mean 'ACTIVE'?)",
    }


def test_a_yaml_syntax_error_keeps_the_parsers_line_and_column(tmp_path: Path) -> None:
    data = _env_dir(tmp_path)
    path = tmp_path / "broken.yaml"
    path.write_text("key: 1\nname: x\nmessage: {title: t, body: b\npurpose: MARKETING\n", encoding="utf-8")
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode == 1
    assert re.fullmatch(rf"magpie: INVALID_REQUEST: {re.escape(str(path))}:4:8: cannot parse: .+\n", result.stderr)
    as_json = tmp_path / "broken.json"
    as_json.write_text('{"key": 1,\n "name": }', encoding="utf-8")
    failed = magpie_cli("campaign", "apply", "-f", str(as_json), data_dir=data)
    assert f"{as_json}:2:10: cannot parse: Expecting value" in failed.stderr


def test_the_multi_campaign_example_of_the_channels_guide_applies_as_pasted(tmp_path: Path) -> None:
    text = CHANNELS.read_text(encoding="utf-8")
    section = text.split("## Campaign files", 1)[1]
    campaigns_yaml = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    commands = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert campaigns_yaml is not None and commands is not None
    data = _env_dir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "campaigns.yaml").write_text(campaigns_yaml.group(1), encoding="utf-8")
    # Before the settings step the file is refused whole, naming campaign 23; nothing is applied.
    refused = magpie_cli("campaign", "apply", "-f", str(work / "campaigns.yaml"), data_dir=data)
    assert refused.returncode == 1 and ": campaign 23: a marketing SMS needs the free opt-out number" in refused.stderr
    assert json.loads(magpie_cli("campaign", "list", "--json", data_dir=data).stdout) == []
    environ = dict(os.environ, MAGPIE_DATA_DIR=str(data), PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    pasted = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands.group(1)],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pasted.returncode == 0, pasted.stderr
    assert [line.split(" (")[0] for line in pasted.stdout.splitlines() if "campaign" in line] == [
        "created campaign 21",
        "created campaign 22",
        "created campaign 23",
    ]


def test_apply_campaigns_stores_all_or_none_in_one_transaction(settings: Settings) -> None:
    db = Database(settings.database_url)
    db.upgrade()
    env = make_env(db)
    good = {"key": 41, "name": "fine", "purpose": "INFORMATION", "message": {"title": "t", "body": "b"}}
    sms = {"key": 42, "name": "needs an opt-out number", "channel": "sms", "purpose": "MARKETING"}
    sms["message"] = {"text": "sale"}
    with pytest.raises(InvalidCampaign, match="smsOptOutNumber"):
        campaigns.apply_campaigns(db, env_id=env.id, raws=[good, sms])
    with db.transaction(write=False) as conn:
        assert campaigns.list_campaigns(conn, db, env_id=env.id) == []
    applied = campaigns.apply_campaigns(db, env_id=env.id, raws=[good, {**good, "key": 43}])
    assert [(c.key, created) for c, created in applied] == [(41, True), (43, True)]


@pytest.mark.parametrize(
    "source",
    [
        "{{ x | default: }}",
        "{{ x | default:}}",
        "{{ x | default: | upcase }}",
        "{% if a %}{{ x | append: }}{% endif %}",
    ],
)
def test_a_filter_missing_its_argument_is_refused_at_apply(source: str) -> None:
    from magpie.domain.campaigns import compile_template, parse_campaign

    with pytest.raises(InvalidCampaign, match="has ':' but no argument"):
        compile_template(source, field_name="title")
    sms = {"key": 1, "name": "n", "channel": "sms", "purpose": "INFORMATION", "message": {"text": source}}
    with pytest.raises(InvalidCampaign, match=r"message\.text: template error"):
        parse_campaign(sms)
    assert compile_template("{{ x | default: '-' }}", field_name="title").render(x=None) == "-"


MESSAGE_PROBLEMS = """\
- key: 51
  name: Order shipped
  status: ACTIVE
  channel: kakao
  type: alimtalk
  message:
    templateCode: ORDER_SHIPPED
    text: "#{고객명}님, 주문 #{주문번호}이 #{배송일}에 출발"
    variables:
      고객명: "{{ user_properties.name | default: }}"
      주문번호: "{{ api_properties.orderNo }}"
    buttons:
      - {type: WL, name: 배송 조회, lnkMo: "https://shop.example/o"}
      - {type: XX, name: 문의}
    fallback: {text: "{{ api_properties.orderNo | append: }}", sender: magpie}
- key: 52
  name: Spring sale
  status: ACTIVE
  channel: sms
  purpose: MARKETING
  message:
    text: "봄 세일 {{ api_properties.rate | upcase: }}"
    titel: 봄 세일
    imageUrls: [ftp://img.example/a.png]
- key: 53
  name: Nothing wrong
  purpose: INFORMATION
  message: {title: t, body: b}
"""


def test_every_problem_inside_a_kakao_and_an_sms_message_is_reported_at_once(tmp_path: Path) -> None:
    data = _env_dir(tmp_path)
    path = tmp_path / "messages.yaml"
    path.write_text(MESSAGE_PROBLEMS, encoding="utf-8")
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        # campaign 51, an AlimTalk: an unknown button field, a button without its link, a bad button type,
        # an unfilled placeholder, an unknown fallback field and two template errors, in one run
        f"{path}:13:33: campaign 51: message.buttons[0]: unknown button field 'lnkMo' (did you mean 'linkMo'?)",
        f"{path}:13:9: campaign 51: message.buttons[0].linkMo is required for a web-link (WL) button",
        f"{path}:14:16: campaign 51: message.buttons[1].type must be one of WL, AL, DS, BK, MD, AC",
        f"{path}:15:64: campaign 51: unknown message.fallback field 'sender'",
        f"{path}:10:7: campaign 51: message.variables does not say how to fill #{{배송일}} "
        "(map each to an api_properties or user_properties template)",
        f"{path}:10:12: campaign 51: message.variables.고객명: template error: "
        "the filter 'default' has ':' but no argument",
        f"{path}:15:22: campaign 51: message.fallback.text: template error: "
        "the filter 'append' has ':' but no argument",
        # campaign 52, a marketing SMS: an unknown field, a bad image URL, a template error and the
        # opt-out number the environment lacks
        f"{path}:23:5: campaign 52: unknown message field 'titel' (did you mean 'title'?)",
        f"{path}:24:17: campaign 52: message.imageUrls[0] must be an http(s) URL",
        f"{path}:22:11: campaign 52: message.text: template error: the filter 'upcase' has ':' but no argument",
        f"{path}:16:3: campaign 52: a marketing SMS needs the free opt-out number: set smsOptOutNumber (080-...) "
        "in the environment",
        f"magpie: INVALID_CAMPAIGN: {path}: 11 problems; nothing applied",
    ]
    assert json.loads(magpie_cli("campaign", "list", "--json", data_dir=data).stdout) == []
    as_json = json.loads(magpie_cli("campaign", "apply", "-f", str(path), "--json", data_dir=data).stderr)
    assert {p["field"] for p in as_json["problems"] if p["campaignKey"] == 51} >= {
        "message.buttons[0].lnkMo",
        "message.buttons[1].type",
        "message.variables.고객명",
        "message.fallback.text",
    }


def test_a_message_problem_of_the_api_is_its_first_and_the_campaign_lists_them_all() -> None:
    from magpie.domain.campaigns import CampaignProblems, parse_campaign

    raw = {
        "key": 1,
        "name": "n",
        "channel": "kakao",
        "type": "brand",
        "message": {"text": "{{ x | default: }}", "imageUrl": "ftp://x", "buttons": [{"type": "WL", "name": "n"}]},
    }
    with pytest.raises(CampaignProblems) as caught:
        parse_campaign(raw)
    assert caught.value.message == "message.buttons[0].linkMo is required for a web-link (WL) button"
    assert [(p.path, p.message) for p in caught.value.problems] == [
        (("message", "buttons", 0), "message.buttons[0].linkMo is required for a web-link (WL) button"),
        (("message", "imageUrl"), "message.imageUrl must be an http(s) URL"),
        (("message", "text"), "message.text: template error: the filter 'default' has ':' but no argument"),
    ]


VARIANT_PROBLEMS = """\
- key: 61
  name: Two variants
  status: ACTIVE
  channel: sms
  purpose: INFORMATION
  variants:
    - name: A
      message: {text: "{{ x | default: }}", titel: A}
    - name: B
      message: {text: "ok", imageUrls: [ftp://img.example/b.png]}
"""


def test_every_variant_of_a_campaign_reports_each_of_its_problems(tmp_path: Path) -> None:
    data = _env_dir(tmp_path)
    path = tmp_path / "variants.yaml"
    path.write_text(VARIANT_PROBLEMS, encoding="utf-8")
    result = magpie_cli("campaign", "apply", "-f", str(path), data_dir=data)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}:8:45: campaign 61: variants[0]: unknown message field 'titel' (did you mean 'title'?)",
        f"{path}:8:23: campaign 61: variants[0].message.text: template error: "
        "the filter 'default' has ':' but no argument",
        f"{path}:10:41: campaign 61: variants[1].message.imageUrls[0] must be an http(s) URL",
        f"magpie: INVALID_CAMPAIGN: {path}: 3 problems; nothing applied",
    ]
    assert json.loads(magpie_cli("campaign", "list", "--json", data_dir=data).stdout) == []


def test_the_admin_api_lists_every_problem_beside_the_first(client: AppClient, env: Env) -> None:
    raw = {
        "key": 1,
        "name": "n",
        "purpse": "INFORMATION",
        "channel": "kakao",
        "type": "brand",
        "message": {"text": "{{ x | default: }}", "imageUrl": "ftp://x", "buttons": [{"type": "WL", "name": "n"}]},
    }
    refused = client.post(f"/admin/v1/environments/{env.name}/campaigns", json=raw, headers=env.admin)
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "INVALID_CAMPAIGN"
    listed = body["problems"]
    # The message is the first problem; every other one is there too, each with its field.
    assert listed[0]["message"] == body["message"]
    fields = {p["field"] for p in listed}
    assert {"purpse", "message.imageUrl", "message.text"} <= fields, listed
    assert any("purpose" in p["message"] for p in listed if p["field"] == "purpse")  # the nearest name
    # Nothing was stored.
    assert client.get(f"/admin/v1/environments/{env.name}/campaigns", headers=env.admin).json()["campaigns"] == []
    # One problem: the answer is as it always was, with no list.
    single = client.post(f"/admin/v1/environments/{env.name}/campaigns", json={"key": 2}, headers=env.admin)
    assert single.status_code == 400 and set(single.json()) == {"code", "message"}
