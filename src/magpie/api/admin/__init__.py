"""The admin API and the Starlette app that serves it beside health, metrics and the docs."""
