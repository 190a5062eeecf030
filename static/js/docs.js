// The API browser at /docs: Swagger UI (static/vendor/, from npm) on this server's OpenAPI document.
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
