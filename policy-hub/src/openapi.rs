//! The OpenAPI 3.1 description served at `/api/v1/openapi.json`.
//!
//! Written by hand (one small document) rather than generated, to keep the
//! hub's dependencies lean; a test checks that every route in it exists.

use serde_json::{Value, json};

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/responses/Error"});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let version =
        json!({"name": "version", "in": "path", "required": true, "schema": {"type": "string"}});
    let bearer = json!([{"publisherToken": []}]);
    let wasm = json!({
        "description": "The component. `ETag` and `x-portcullis-digest` carry `sha256:<hex>`, `repr-digest` the RFC 9530 digest; 304 when `If-None-Match` matches.",
        "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}}
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portcullis policy hub",
            "version": "1.0.0",
            "description": "Publish, discover and download Portcullis gateway policies (WebAssembly components of portcullis:policy/policy-world@0.1.0) and their settings schemas."
        },
        "paths": {
            "/api/v1/policies": {
                "get": {
                    "summary": "List and search policies (latest non-yanked version of each)",
                    "parameters": [
                        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "case-insensitive text in name, display name or description"},
                        {"name": "category", "in": "query", "schema": {"$ref": "#/components/schemas/Category"}},
                        {"name": "capability", "in": "query", "schema": {"$ref": "#/components/schemas/Capability"}},
                        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
                        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
                    ],
                    "responses": {
                        "200": {"description": "A page", "content": {"application/json": {"schema": {
                            "type": "object",
                            "required": ["items", "page", "per_page", "total"],
                            "properties": {
                                "items": {"type": "array", "items": {"$ref": "#/components/schemas/VersionSummary"}},
                                "page": {"type": "integer"}, "per_page": {"type": "integer"}, "total": {"type": "integer"}
                            }
                        }}}},
                        "400": error
                    }
                },
                "post": {
                    "summary": "Publish a version (one transaction; versions are immutable)",
                    "security": bearer,
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["manifest", "module"],
                        "additionalProperties": false,
                        "properties": {
                            "manifest": {"$ref": "#/components/schemas/Manifest"},
                            "module": {"type": "string", "contentEncoding": "base64", "description": "the component"}
                        }
                    }}}},
                    "responses": {
                        "201": {"description": "Published", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PolicyVersion"}}}},
                        "400": error, "401": error, "403": error, "409": error, "413": error
                    }
                }
            },
            "/api/v1/policies/{name}": {
                "get": {
                    "summary": "A policy with all its versions (yanked ones marked) and its latest version's manifest",
                    "parameters": [name],
                    "responses": {
                        "200": {"description": "The policy", "content": {"application/json": {"schema": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "latest_version": {"type": ["string", "null"]},
                                "latest": {"oneOf": [{"$ref": "#/components/schemas/PolicyVersion"}, {"type": "null"}]},
                                "versions": {"type": "array", "items": {"$ref": "#/components/schemas/VersionSummary"}}
                            }
                        }}}},
                        "404": error
                    }
                }
            },
            "/api/v1/policies/{name}/versions/{version}": {
                "get": {
                    "summary": "One version's manifest, settings schema included (served even when yanked)",
                    "parameters": [name, version],
                    "responses": {
                        "200": {"description": "The version", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PolicyVersion"}}}},
                        "404": error
                    }
                }
            },
            "/api/v1/policies/{name}/versions/{version}/module": {
                "get": {"summary": "Download a version's module", "parameters": [name, version], "responses": {"200": wasm.clone(), "304": {"description": "Not modified"}, "404": error}}
            },
            "/api/v1/policies/{name}/versions/{version}/yank": {
                "post": {"summary": "Yank a version: hidden from listings, still served", "security": bearer, "parameters": [name, version],
                    "responses": {"200": {"$ref": "#/components/responses/YankState"}, "401": error, "403": error, "404": error}},
                "delete": {"summary": "Undo a yank", "security": bearer, "parameters": [name, version],
                    "responses": {"200": {"$ref": "#/components/responses/YankState"}, "401": error, "403": error, "404": error}}
            },
            "/api/v1/modules/{digest}": {
                "get": {
                    "summary": "Download a module by content address",
                    "parameters": [{"name": "digest", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}],
                    "responses": {"200": wasm, "304": {"description": "Not modified"}, "400": error, "404": error}
                }
            }
        },
        "components": {
            "securitySchemes": {"publisherToken": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {"description": "A problem naming the field at fault", "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "examples": ["invalid_manifest", "invalid_schema", "invalid_defaults", "invalid_module", "undeclared_capability", "digest_mismatch", "version_exists", "too_large", "not_found", "unauthorized", "forbidden"]},
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"], "description": "e.g. `manifest.defaults/limit`, `module`, `category`"}
                    }}}
                }}}},
                "YankState": {"description": "The version's yank state", "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "yanked": {"type": "boolean"}}
                }}}}
            },
            "schemas": {
                "Category": {"type": "string", "enum": ["guardrail", "traffic", "transform", "observability"]},
                "Phase": {"type": "string", "enum": ["request", "response", "stream", "complete"]},
                "Capability": {"type": "string", "enum": ["counters", "cache", "clock", "log", "metrics", "embeddings", "metering", "caller"]},
                "Manifest": {
                    "type": "object",
                    "required": ["name", "version", "category", "phases"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
                        "version": {"type": "string", "description": "semantic version, no build metadata"},
                        "category": {"$ref": "#/components/schemas/Category"},
                        "display_name": {"type": "string"},
                        "description": {"type": "string"},
                        "phases": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Phase"}},
                        "capabilities": {"type": "array", "items": {"$ref": "#/components/schemas/Capability"}},
                        "complete_reads": {"type": "string", "enum": ["whole", "usage"], "description": "what the complete phase reads of the answer; default whole"},
                        "request_reads": {"type": "array", "items": {"type": "string", "enum": ["messages", "headers", "raw"]}, "description": "what the request phase reads besides the ids, format, model, stream and max tokens; default all three"},
                        "settings_schema": {"type": ["object", "boolean"], "description": "JSON Schema of the settings"},
                        "defaults": {"description": "valid against settings_schema; default {}"},
                        "docs": {"type": "string", "description": "markdown"},
                        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "optional on publish; must match the module"}
                    }
                },
                "PolicyVersion": {
                    "allOf": [{"$ref": "#/components/schemas/Manifest"}, {
                        "type": "object",
                        "required": ["digest", "size", "publisher", "published_at", "yanked"],
                        "properties": {
                            "digest": {"type": "string", "description": "sha256:<hex>"},
                            "size": {"type": "integer"},
                            "publisher": {"type": "string"},
                            "published_at": {"type": "string", "format": "date-time"},
                            "yanked": {"type": "boolean"}
                        }
                    }]
                },
                "VersionSummary": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"}, "version": {"type": "string"},
                        "category": {"$ref": "#/components/schemas/Category"},
                        "display_name": {"type": "string"}, "description": {"type": "string"},
                        "phases": {"type": "array", "items": {"$ref": "#/components/schemas/Phase"}},
                        "capabilities": {"type": "array", "items": {"$ref": "#/components/schemas/Capability"}},
                        "digest": {"type": "string"}, "size": {"type": "integer"},
                        "publisher": {"type": "string"}, "published_at": {"type": "string", "format": "date-time"},
                        "yanked": {"type": "boolean"}
                    }
                }
            }
        }
    })
}
