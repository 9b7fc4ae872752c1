"""Admin API for a campaign's experiment: figures and statistics per version and arm, as JSON or CSV."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from magpie.api.admin.admin import admin
from magpie.api.http.context import Context
from magpie.domain.bodies import parse_int
from magpie.errors import InvalidRequest, NotFound
from magpie.store import accounts, campaigns, conversions


async def campaign_experiment(ctx: Context, request: Request) -> Any:
    """Experiment statistics of a campaign per version, variant and control (format=csv for CSV)."""
    name = request.path_params["env"]
    env_id: int = await ctx.read(lambda conn: accounts.env_id_by_name(conn, ctx.db, name))
    key = parse_int(request.path_params["key"], name="the campaign key", default=0)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv")

    def read(conn: Any) -> dict[str, Any]:
        campaign = campaigns.CampaignCache().load(conn, ctx.db, env_id=env_id, key=key)
        if campaign is None:
            raise NotFound(f"no campaign with key {key}")
        return conversions.experiment_report(conn, ctx.db, env_id=env_id, campaign=campaign)

    report = await ctx.read(read)
    if fmt == "csv":
        return Response(
            conversions.report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="campaign-{key}-experiment.csv"'},
        )
    return report


def experiment_admin_routes(ctx: Context) -> list[BaseRoute]:
    env = "/admin/v1/environments/{env}"
    return [Route(env + "/campaigns/{key}/experiment", admin(ctx, campaign_experiment), methods=["GET"])]
