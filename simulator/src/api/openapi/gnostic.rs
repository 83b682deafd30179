//! The protobuf form of `/openapi/v2` that client-go asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's
//! `openapi.v2.Document`. The messages below declare the fields this server
//! fills, with the field numbers of gnostic's published OpenAPIv2.proto; the
//! JSON document is converted into them, so both forms say the same.
//! Vendor extensions, enums and defaults travel as YAML text, as gnostic
//! stores them (JSON is valid YAML).

use prost::{Message, Oneof};
use serde_json::{Map, Value};

/// What clients ask for in `Accept`.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The same type as the apiserver names it in `Content-Type`: Go's MIME
/// parser rejects the `@` of the asked-for form.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(oneof = "ParametersItemKind", tags = "1")]
    pub oneof: Option<ParametersItemKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ParametersItemKind {
    #[prost(message, tag = "1")]
    Parameter(Parameter),
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(oneof = "ParameterKind", tags = "1, 2")]
    pub oneof: Option<ParameterKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ParameterKind {
    #[prost(message, tag = "1")]
    Body(Box<BodyParameter>),
    #[prost(message, tag = "2")]
    NonBody(NonBodyParameter),
}

#[derive(Clone, PartialEq, Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "NonBodyKind", tags = "3, 4")]
    pub oneof: Option<NonBodyKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum NonBodyKind {
    #[prost(message, tag = "3")]
    Query(QueryParameter),
    #[prost(message, tag = "4")]
    Path(PathParameter),
}

/// gnostic's `QueryParameterSubSchema`.
#[derive(Clone, PartialEq, Message)]
pub struct QueryParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

/// gnostic's `PathParameterSubSchema`.
#[derive(Clone, PartialEq, Message)]
pub struct PathParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    #[prost(oneof = "ResponseValueKind", tags = "1")]
    pub oneof: Option<ResponseValueKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum ResponseValueKind {
    #[prost(message, tag = "1")]
    Response(Response),
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SchemaItem {
    #[prost(oneof = "SchemaItemKind", tags = "1")]
    pub oneof: Option<SchemaItemKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum SchemaItemKind {
    #[prost(message, tag = "1")]
    Schema(Schema),
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// gnostic's `Any`: only the YAML text is used.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalPropertiesItem>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalPropertiesKind", tags = "1, 2")]
    pub oneof: Option<AdditionalPropertiesKind>,
}

#[derive(Clone, PartialEq, Oneof)]
pub enum AdditionalPropertiesKind {
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("{path}: {what}")]
    Unsupported { path: String, what: String },
}

fn unsupported(path: &str, what: impl Into<String>) -> ConvertError {
    ConvertError::Unsupported { path: path.to_string(), what: what.into() }
}

fn yaml(v: &Value) -> Any {
    Any { yaml: v.to_string() }
}

fn extension(name: &str, v: &Value) -> NamedAny {
    NamedAny { name: name.to_string(), value: Some(yaml(v)) }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

/// One JSON schema as gnostic's `Schema`; a keyword gnostic has no field for is an error.
pub fn schema(v: &Value, path: &str) -> Result<Schema, ConvertError> {
    let m = v.as_object().ok_or_else(|| unsupported(path, "a schema that is not an object"))?;
    let mut s = Schema::default();
    let f64_of = |v: &Value| v.as_f64().unwrap_or_default();
    let i64_of = |v: &Value| v.as_i64().unwrap_or_default();
    for (k, v) in m {
        match k.as_str() {
            "$ref" => s.r#ref = text(v),
            "format" => s.format = text(v),
            "title" => s.title = text(v),
            "description" => s.description = text(v),
            "default" => s.default = Some(yaml(v)),
            "example" => s.example = Some(yaml(v)),
            "multipleOf" => s.multiple_of = f64_of(v),
            "maximum" => s.maximum = f64_of(v),
            "exclusiveMaximum" => s.exclusive_maximum = v.as_bool().unwrap_or_default(),
            "minimum" => s.minimum = f64_of(v),
            "exclusiveMinimum" => s.exclusive_minimum = v.as_bool().unwrap_or_default(),
            "maxLength" => s.max_length = i64_of(v),
            "minLength" => s.min_length = i64_of(v),
            "pattern" => s.pattern = text(v),
            "maxItems" => s.max_items = i64_of(v),
            "minItems" => s.min_items = i64_of(v),
            "uniqueItems" => s.unique_items = v.as_bool().unwrap_or_default(),
            "maxProperties" => s.max_properties = i64_of(v),
            "minProperties" => s.min_properties = i64_of(v),
            "readOnly" => s.read_only = v.as_bool().unwrap_or_default(),
            "required" => s.required = string_list(v),
            "enum" => s.r#enum = v.as_array().map(|a| a.iter().map(yaml).collect()).unwrap_or_default(),
            "type" => {
                let value = match v {
                    Value::String(t) => vec![t.clone()],
                    other => string_list(other),
                };
                s.r#type = Some(TypeItem { value });
            }
            "items" => {
                let schemas = match v {
                    Value::Array(a) => {
                        a.iter().map(|i| schema(i, &format!("{path}[]"))).collect::<Result<Vec<_>, _>>()?
                    }
                    one => vec![schema(one, &format!("{path}[]"))?],
                };
                s.items = Some(ItemsItem { schema: schemas });
            }
            "allOf" => {
                s.all_of = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| schema(i, &format!("{path}.allOf")))
                    .collect::<Result<_, _>>()?;
            }
            "additionalProperties" => {
                let kind = match v {
                    Value::Bool(b) => AdditionalPropertiesKind::Boolean(*b),
                    other => AdditionalPropertiesKind::Schema(Box::new(schema(other, &format!("{path}{{}}"))?)),
                };
                s.additional_properties = Some(AdditionalPropertiesItem { oneof: Some(kind) });
            }
            "properties" => {
                let props = v.as_object().ok_or_else(|| unsupported(path, "properties that are not an object"))?;
                let mut named = Vec::with_capacity(props.len());
                for (name, p) in props {
                    named.push(NamedSchema { name: name.clone(), value: Some(schema(p, &format!("{path}.{name}"))?) });
                }
                s.properties = Some(Properties { additional_properties: named });
            }
            x if x.starts_with("x-") => s.vendor_extension.push(extension(x, v)),
            other => return Err(unsupported(path, format!("keyword {other}"))),
        }
    }
    Ok(s)
}

fn parameter(p: &Value, path: &str) -> Result<ParametersItem, ConvertError> {
    let name = text(&p["name"]);
    let location = text(&p["in"]);
    let description = text(&p["description"]);
    let required = p["required"].as_bool().unwrap_or_default();
    let kind = match location.as_str() {
        "body" => ParameterKind::Body(Box::new(BodyParameter {
            description,
            name,
            r#in: location,
            required,
            schema: Some(schema(&p["schema"], &format!("{path} body"))?),
        })),
        "query" => ParameterKind::NonBody(NonBodyParameter {
            oneof: Some(NonBodyKind::Query(QueryParameter {
                required,
                r#in: location,
                description,
                name,
                r#type: text(&p["type"]),
                unique_items: p["uniqueItems"].as_bool().unwrap_or_default(),
            })),
        }),
        "path" => ParameterKind::NonBody(NonBodyParameter {
            oneof: Some(NonBodyKind::Path(PathParameter {
                required,
                r#in: location,
                description,
                name,
                r#type: text(&p["type"]),
                unique_items: p["uniqueItems"].as_bool().unwrap_or_default(),
            })),
        }),
        other => return Err(unsupported(path, format!("parameter in {other}"))),
    };
    Ok(ParametersItem { oneof: Some(ParametersItemKind::Parameter(Parameter { oneof: Some(kind) })) })
}

fn operation(op: &Value, path: &str) -> Result<Operation, ConvertError> {
    let mut out = Operation {
        tags: string_list(&op["tags"]),
        description: text(&op["description"]),
        operation_id: text(&op["operationId"]),
        produces: string_list(&op["produces"]),
        consumes: string_list(&op["consumes"]),
        schemes: string_list(&op["schemes"]),
        ..Default::default()
    };
    for p in op["parameters"].as_array().into_iter().flatten() {
        out.parameters.push(parameter(p, path)?);
    }
    let mut codes = Vec::new();
    for (code, r) in op["responses"].as_object().into_iter().flatten() {
        let schema = match r.get("schema") {
            Some(s) => Some(SchemaItem { oneof: Some(SchemaItemKind::Schema(schema(s, &format!("{path} {code}"))?)) }),
            None => None,
        };
        codes.push(NamedResponseValue {
            name: code.clone(),
            value: Some(ResponseValue {
                oneof: Some(ResponseValueKind::Response(Response { description: text(&r["description"]), schema })),
            }),
        });
    }
    out.responses = Some(Responses { response_code: codes });
    for (k, v) in op.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            out.vendor_extension.push(extension(k, v));
        }
    }
    Ok(out)
}

fn path_item(ops: &Map<String, Value>, path: &str) -> Result<PathItem, ConvertError> {
    let mut item = PathItem::default();
    for (method, op) in ops {
        let op = Some(operation(op, &format!("{method} {path}"))?);
        match method.as_str() {
            "get" => item.get = op,
            "put" => item.put = op,
            "post" => item.post = op,
            "delete" => item.delete = op,
            "patch" => item.patch = op,
            other => return Err(unsupported(path, format!("method {other}"))),
        }
    }
    Ok(item)
}

/// The Swagger JSON document as gnostic's protobuf `Document`, encoded.
pub fn encode(doc: &Value) -> Result<Vec<u8>, ConvertError> {
    let mut paths = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        let ops = ops.as_object().ok_or_else(|| unsupported(path, "a path item that is not an object"))?;
        paths.push(NamedPathItem { name: path.clone(), value: Some(path_item(ops, path)?) });
    }
    let mut definitions = Vec::new();
    for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
        definitions.push(NamedSchema { name: name.clone(), value: Some(schema(s, name)?) });
    }
    let document = Document {
        swagger: text(&doc["swagger"]),
        info: Some(Info { title: text(&doc["info"]["title"]), version: text(&doc["info"]["version"]) }),
        paths: Some(Paths { path: paths }),
        definitions: Some(Definitions { additional_properties: definitions }),
    };
    Ok(document.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_keep_types_properties_items_and_extensions() {
        let s = schema(
            &json!({"type": "object", "description": "d", "required": ["a"],
                    "properties": {"a": {"type": "array", "items": {"$ref": "#/definitions/X"}},
                                   "b": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "K", "version": "v1"}]}),
            "K",
        )
        .expect("converts");
        assert_eq!(s.r#type, Some(TypeItem { value: vec!["object".into()] }));
        let props = s.properties.as_ref().expect("properties").additional_properties.clone();
        assert_eq!(props[0].name, "a");
        assert_eq!(
            props[0].value.as_ref().and_then(|a| a.items.as_ref()).map(|i| i.schema[0].r#ref.as_str()),
            Some("#/definitions/X")
        );
        assert_eq!(
            s.vendor_extension[0].value.as_ref().map(|a| a.yaml.as_str()),
            Some(r#"[{"group":"","kind":"K","version":"v1"}]"#)
        );
        let decoded = Schema::decode(s.encode_to_vec().as_slice()).expect("round trip");
        assert_eq!(decoded, s);
    }

    #[test]
    fn unknown_keywords_are_errors() {
        let e = schema(&json!({"oneOf": []}), "P").unwrap_err();
        assert_eq!(e.to_string(), "P: keyword oneOf");
    }

    #[test]
    fn documents_round_trip_through_protobuf() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1"},
            "paths": {"/api/v1/namespaces/{namespace}/pods/{name}": {"patch": {
                "operationId": "patchCoreV1NamespacedPod",
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
                               {"name": "name", "in": "path", "required": true, "type": "string"},
                               {"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/P"}}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/P"}}},
                "x-kubernetes-group-version-kind": {"group": "", "kind": "Pod", "version": "v1"}}}},
            "definitions": {"P": {"type": "object"}},
        });
        let bytes = encode(&doc).expect("encodes");
        let back = Document::decode(bytes.as_slice()).expect("decodes");
        let patch = back.paths.expect("paths").path[0].value.clone().and_then(|p| p.patch).expect("patch");
        let first = match &patch.parameters[0].oneof {
            Some(ParametersItemKind::Parameter(Parameter { oneof: Some(ParameterKind::NonBody(n)) })) => n.clone(),
            other => panic!("{other:?}"),
        };
        assert!(matches!(first.oneof, Some(NonBodyKind::Query(q)) if q.name == "fieldValidation"));
        assert_eq!(patch.vendor_extension[0].name, "x-kubernetes-group-version-kind");
        assert_eq!(back.definitions.expect("definitions").additional_properties[0].name, "P");
    }
}
