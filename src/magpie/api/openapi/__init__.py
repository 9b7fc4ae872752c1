"""The OpenAPI document, its schema helpers and the bundled Swagger UI."""
