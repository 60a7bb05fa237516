//! Parsing and validation of bulk-load bodies (FACTS §3, §5, §6).
//!
//! Pure functions: bytes in, a typed [`LoadData`] (plus accepted-but-bad-practice warnings)
//! or an [`ApiError`] out. Structural problems (not JSON, wrong JSON types, a bad
//! `entityType`) are Okta's E0000003 "not well-formed"; content problems (lengths, limits,
//! non-string values, empty arrays) are E0000001 with one cause per problem, so a client sees
//! every mistake in one round trip.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::errors::ApiError;

/// Which bulk endpoint a load came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadKind {
    UpsertUsers,
    DeleteUsers,
    UpsertGroups,
    DeleteGroups,
    UpsertMemberships,
    DeleteMemberships,
}

impl LoadKind {
    /// The `LoadView.kind` name; user loads are plain "upsert"/"delete".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpsertUsers => "upsert",
            Self::DeleteUsers => "delete",
            Self::UpsertGroups => "groups-upsert",
            Self::DeleteGroups => "groups-delete",
            Self::UpsertMemberships => "group-memberships-upsert",
            Self::DeleteMemberships => "group-memberships-delete",
        }
    }
}

/// A validated load, kept until the session is processed.
#[derive(Debug, Clone)]
pub(crate) enum LoadData {
    UpsertUsers(Vec<UserUpsert>),
    DeleteUsers(Vec<String>),
    UpsertGroups(Vec<GroupUpsert>),
    DeleteGroups(Vec<String>),
    UpsertMemberships(Vec<(String, Vec<String>)>),
    DeleteMemberships(Vec<(String, Vec<String>)>),
}

impl LoadData {
    /// Number of entities in the load (what the 200-per-request limit counts).
    pub fn len(&self) -> usize {
        match self {
            Self::UpsertUsers(v) => v.len(),
            Self::DeleteUsers(v) | Self::DeleteGroups(v) => v.len(),
            Self::UpsertGroups(v) => v.len(),
            Self::UpsertMemberships(v) | Self::DeleteMemberships(v) => v.len(),
        }
    }

    /// User external ids, in order, for the per-session user accounting.
    pub fn user_ids(&self) -> Vec<&str> {
        match self {
            Self::UpsertUsers(v) => v.iter().map(|(id, _)| id.as_str()).collect(),
            Self::DeleteUsers(v) => v.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// `(externalId, profile)` of one user upsert.
pub(crate) type UserUpsert = (String, BTreeMap<String, String>);

#[derive(Debug, Clone)]
pub(crate) struct GroupUpsert {
    pub external_id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
}

/// A validated load plus the accepted-but-discouraged things it contained.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub data: LoadData,
    pub warnings: Vec<(&'static str, String)>,
}

const USER_EXTERNAL_ID_MAX: usize = 512;
const GROUP_ID_MAX: usize = 255;

/// Parse and validate a bulk-load body. `max_items` is the per-request entity limit.
pub(crate) fn parse_load(
    kind: LoadKind,
    body: &[u8],
    max_items: usize,
) -> Result<Parsed, ApiError> {
    if body.is_empty() {
        return Err(ApiError::malformed("missing_body", "bulk-load request without a body"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed("malformed_json", format!("body is not valid JSON: {e}"))
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::malformed("malformed_json", "body is not a JSON object"));
    };
    let mut v = Validator::default();
    let data = match kind {
        LoadKind::UpsertUsers | LoadKind::DeleteUsers => {
            check_entity_type(&obj)?;
            let items = items(&obj, "profiles", max_items, &mut v)?;
            if kind == LoadKind::UpsertUsers {
                LoadData::UpsertUsers(upsert_users(items, &mut v)?)
            } else {
                LoadData::DeleteUsers(delete_users(items, &mut v)?)
            }
        }
        LoadKind::UpsertGroups => LoadData::UpsertGroups(upsert_groups(
            items(&obj, "profiles", max_items, &mut v)?,
            &mut v,
        )?),
        LoadKind::DeleteGroups => {
            let ids = items(&obj, "externalIds", max_items, &mut v)?;
            let mut out = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let Value::String(id) = id else {
                    return Err(ApiError::malformed(
                        "malformed_json",
                        format!("externalIds[{i}] is not a string"),
                    ));
                };
                v.id_length(&format!("externalIds[{i}]"), id, GROUP_ID_MAX, "group_id_length");
                out.push(id.clone());
            }
            LoadData::DeleteGroups(out)
        }
        LoadKind::UpsertMemberships | LoadKind::DeleteMemberships => {
            let list = memberships(items(&obj, "memberships", max_items, &mut v)?, &mut v)?;
            if kind == LoadKind::UpsertMemberships {
                LoadData::UpsertMemberships(list)
            } else {
                LoadData::DeleteMemberships(list)
            }
        }
    };
    let warnings = v.finish()?;
    Ok(Parsed { data, warnings })
}

/// The body of a direct `POST /users` or `PUT /users/{externalId}` (`UserRequestSchema`, FACTS
/// §2b): the bulk upsert's rules for one profile, plus the `required: [email, userName]` of
/// `IdentitySourceUserProfileForUpsertRequired`. `path_id` is the externalId of a `PUT`'s
/// path; a body naming another one is refused [INF].
pub(crate) fn parse_direct_user(
    bytes: &[u8],
    path_id: Option<&str>,
) -> Result<(String, BTreeMap<String, String>), ApiError> {
    let mut root: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed("malformed_json", format!("not JSON: {e}")))?;
    if let (Some(id), Value::Object(obj)) = (path_id, &mut root) {
        match obj.get("externalId") {
            None => {
                obj.insert("externalId".into(), Value::String(id.to_string()));
            }
            Some(Value::String(given)) if given != id => {
                return Err(ApiError::validation(
                    "external_id_mismatch",
                    "externalId",
                    format!("externalId: {given} does not match the path's {id}"),
                ));
            }
            Some(_) => {}
        }
    }
    let mut v = Validator::default();
    let mut users = upsert_users(std::slice::from_ref(&root), &mut v)?;
    let (external_id, profile) = users.pop().unwrap_or_default();
    for key in ["email", "userName"] {
        if !profile.contains_key(key) {
            v.error(
                "required_profile_field",
                format!("profile.{key}"),
                format!("profile.{key}: The field {key} is required"),
            );
        }
    }
    v.finish()?;
    Ok((external_id, profile))
}

/// Collects every content error of one body, then fails once with all causes.
#[derive(Default)]
struct Validator {
    /// `(rule, field, cause)`.
    errors: Vec<(&'static str, String, String)>,
    warnings: Vec<(&'static str, String)>,
}

impl Validator {
    fn error(&mut self, rule: &'static str, field: impl Into<String>, cause: impl Into<String>) {
        self.errors.push((rule, field.into(), cause.into()));
    }

    fn id_length(&mut self, field: &str, id: &str, max: usize, rule: &'static str) {
        let len = id.chars().count();
        if len == 0 || len > max {
            self.error(
                rule,
                field,
                format!(
                    "{field}: The field must be between 1 and {max} characters long (got {len})"
                ),
            );
        }
    }

    /// The warnings if the body is acceptable, else one error carrying every cause.
    fn finish(self) -> Result<Vec<(&'static str, String)>, ApiError> {
        let Some((_, first_field, _)) = self.errors.first() else {
            return Ok(self.warnings);
        };
        // Okta names the offending field in the summary; with several, the first one.
        let field = first_field.rsplit('.').next().unwrap_or(first_field).to_string();
        let mut err = ApiError::validation("unused", &field, "");
        err.causes = self.errors.iter().map(|(_, _, cause)| cause.clone()).collect();
        err.violations = self.errors.into_iter().map(|(rule, _, cause)| (rule, cause)).collect();
        // Accepted-only warnings (e.g. empty_value on a custom attribute) are still worth
        // recording when the request fails for another reason.
        err.violations.extend(self.warnings);
        Err(err)
    }
}

/// `entityType` must be `USERS` (S3: an invalid value is E0000003).
fn check_entity_type(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("entityType") {
        Some(Value::String(s)) if s == "USERS" => Ok(()),
        Some(other) => Err(ApiError::malformed(
            "invalid_entity_type",
            format!("entityType must be \"USERS\", got {other}"),
        )),
        None => Err(ApiError::malformed(
            "invalid_entity_type",
            "entityType is missing (must be \"USERS\")",
        )),
    }
}

/// The entity array under `key`: present, an array, 1..=max_items long.
fn items<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    max_items: usize,
    v: &mut Validator,
) -> Result<&'a [Value], ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(ApiError::validation(
            "empty_profiles",
            key,
            format!("{key}: The field {key} must not be empty"),
        )),
        Some(Value::Array(a)) if a.is_empty() => Err(ApiError::validation(
            "empty_profiles",
            key,
            format!("{key}: The field {key} must not be empty"),
        )),
        Some(Value::Array(a)) => {
            if a.len() > max_items {
                v.error(
                    "max_profiles_per_request",
                    key,
                    format!("{key}: A bulk-load request can contain at most {max_items} entities (got {})", a.len()),
                );
            }
            Ok(a)
        }
        Some(_) => Err(ApiError::malformed("malformed_json", format!("{key} is not an array"))),
    }
}

fn as_object<'a>(item: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    item.as_object()
        .ok_or_else(|| ApiError::malformed("malformed_json", format!("{what} is not an object")))
}

/// A required string id field; missing is a content error, a non-string a structural one.
fn string_field(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
    rule: &'static str,
    v: &mut Validator,
) -> Result<String, ApiError> {
    match obj.get(key) {
        Some(Value::String(s)) => {
            v.id_length(&format!("{path}.{key}"), s, max, rule);
            Ok(s.clone())
        }
        None | Some(Value::Null) => {
            v.error(
                rule,
                format!("{path}.{key}"),
                format!("{path}.{key}: The field {key} is required"),
            );
            Ok(String::new())
        }
        Some(_) => {
            Err(ApiError::malformed("malformed_json", format!("{path}.{key} is not a string")))
        }
    }
}

/// Spec constraints of `IdentitySourceUserProfileForUpsert` (FACTS §3): (name, min, max, email-shaped).
const PROFILE_FIELDS: &[(&str, usize, usize, bool)] = &[
    ("email", 5, 100, true),
    ("secondEmail", 5, 100, true),
    ("firstName", 1, 50, false),
    ("lastName", 1, 50, false),
    ("userName", 0, 100, false),
    ("mobilePhone", 0, 100, false),
    ("homeAddress", 0, 4096, false),
];

fn upsert_users(items: &[Value], v: &mut Validator) -> Result<Vec<UserUpsert>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("profiles[{i}]");
        let obj = as_object(item, &path)?;
        let external_id =
            string_field(obj, "externalId", &path, USER_EXTERNAL_ID_MAX, "external_id_length", v)?;
        let mut profile = BTreeMap::new();
        match obj.get("profile") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                for (key, value) in p {
                    let field = format!("{path}.profile.{key}");
                    match value {
                        Value::String(s) => {
                            check_profile_value(&field, key, s, v);
                            profile.insert(key.clone(), s.clone());
                        }
                        // The spec marks several attributes nullable; a null is taken as
                        // "no value" (the profile is replaced wholesale, so it clears it). [INF]
                        Value::Null => {}
                        other => v.error(
                            "non_string_value",
                            &field,
                            format!("{field}: Profile attributes can only be of the string type (got {})", json_type(other)),
                        ),
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::malformed(
                    "malformed_json",
                    format!("{path}.profile is not an object"),
                ));
            }
        }
        // Judge emptiness on what was sent: a profile of only invalid values is an error, not
        // an empty profile.
        let sent_values = matches!(obj.get("profile"), Some(Value::Object(p)) if p.values().any(|x| !x.is_null()));
        if !sent_values {
            v.warnings.push((
                "empty_profile",
                format!("{path} ({external_id}): an empty profile creates an empty user, which Okta does not recommend"),
            ));
        }
        out.push((external_id, profile));
    }
    Ok(out)
}

fn check_profile_value(field: &str, key: &str, value: &str, v: &mut Validator) {
    if value.is_empty() {
        // Clients must omit empty values. Okta itself only rejects "" where the spec sets a
        // minLength (checked below); elsewhere it is accepted but recorded.
        v.warnings.push((
            "empty_value",
            format!("{field}: empty string value (omit the attribute instead)"),
        ));
    }
    let Some(&(_, min, max, email)) = PROFILE_FIELDS.iter().find(|(name, ..)| *name == key) else {
        return;
    };
    let len = value.chars().count();
    if len < min || len > max {
        v.error(
            "profile_field_length",
            field,
            format!("{field}: The field {key} must be between {min} and {max} characters long (got {len})"),
        );
    } else if email && !looks_like_email(value) {
        v.error(
            "profile_field_format",
            field,
            format!("{field}: The field {key} must be a valid email address"),
        );
    }
}

/// Deliberately loose: one `@`, something before it, a dotted domain after it, no spaces.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn delete_users(items: &[Value], v: &mut Validator) -> Result<Vec<String>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("profiles[{i}]");
            string_field(
                as_object(item, &path)?,
                "externalId",
                &path,
                USER_EXTERNAL_ID_MAX,
                "external_id_length",
                v,
            )
        })
        .collect()
}

fn upsert_groups(items: &[Value], v: &mut Validator) -> Result<Vec<GroupUpsert>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("profiles[{i}]");
        let obj = as_object(item, &path)?;
        let external_id =
            string_field(obj, "externalId", &path, GROUP_ID_MAX, "group_id_length", v)?;
        let (mut display_name, mut description) = (None, None);
        match obj.get("profile") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                for (key, slot, min, max) in [
                    ("displayName", &mut display_name, 1, 255),
                    ("description", &mut description, 0, 1024),
                ] {
                    let field = format!("{path}.profile.{key}");
                    match p.get(key) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) => {
                            let len = s.chars().count();
                            if len < min || len > max {
                                v.error(
                                    "group_profile_field_length",
                                    &field,
                                    format!("{field}: The field {key} must be between {min} and {max} characters long (got {len})"),
                                );
                            }
                            *slot = Some(s.clone());
                        }
                        Some(other) => v.error(
                            "non_string_value",
                            &field,
                            format!("{field}: must be a string (got {})", json_type(other)),
                        ),
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::malformed(
                    "malformed_json",
                    format!("{path}.profile is not an object"),
                ));
            }
        }
        out.push(GroupUpsert { external_id, display_name, description });
    }
    Ok(out)
}

fn memberships(items: &[Value], v: &mut Validator) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("memberships[{i}]");
        let obj = as_object(item, &path)?;
        let group =
            string_field(obj, "groupExternalId", &path, GROUP_ID_MAX, "group_id_length", v)?;
        let members = match obj.get("memberExternalIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => {
                let mut members = Vec::with_capacity(ids.len());
                for (j, id) in ids.iter().enumerate() {
                    let field = format!("{path}.memberExternalIds[{j}]");
                    let Value::String(id) = id else {
                        return Err(ApiError::malformed(
                            "malformed_json",
                            format!("{field} is not a string"),
                        ));
                    };
                    v.id_length(&field, id, GROUP_ID_MAX, "group_id_length");
                    members.push(id.clone());
                }
                members
            }
            Some(_) => {
                return Err(ApiError::malformed(
                    "malformed_json",
                    format!("{path}.memberExternalIds is not an array"),
                ));
            }
        };
        out.push((group, members));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(err: &ApiError) -> Vec<&'static str> {
        err.violations.iter().map(|(r, _)| *r).collect()
    }

    #[test]
    fn malformed_and_entity_type_are_e0000003() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"entityType":"GROUPS","profiles":[{"externalId":"a"}]}"#,
            br#"{"profiles":[]}"#,
        ] {
            let err = parse_load(LoadKind::UpsertUsers, body, 200).expect_err("must be rejected");
            assert_eq!(err.code, "E0000003", "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn every_bad_field_is_a_cause() {
        let body = br#"{"entityType":"USERS","profiles":[{"externalId":"a","profile":{"email":"nope@x","firstName":"","tags":["x"],"age":3}}]}"#;
        let err = parse_load(LoadKind::UpsertUsers, body, 200).expect_err("must be rejected");
        assert_eq!(err.code, "E0000001");
        assert_eq!(err.causes.len(), 4, "{:?}", err.causes);
        let r = rules(&err);
        assert!(
            r.contains(&"profile_field_format")
                && r.contains(&"non_string_value")
                && r.contains(&"empty_value"),
            "{r:?}"
        );
    }

    #[test]
    fn empty_custom_value_and_empty_profile_are_warnings() {
        let body = br#"{"entityType":"USERS","profiles":[{"externalId":"a","profile":{"dept":""}},{"externalId":"b","profile":{}}]}"#;
        let parsed = parse_load(LoadKind::UpsertUsers, body, 200).expect("accepted");
        let r: Vec<_> = parsed.warnings.iter().map(|(r, _)| *r).collect();
        assert_eq!(r, ["empty_value", "empty_profile"]);
    }

    #[test]
    fn group_bodies_enforce_counts_and_lengths() {
        let long = "g".repeat(256);
        let body = format!(r#"{{"externalIds":["ok","{long}"]}}"#);
        let err = parse_load(LoadKind::DeleteGroups, body.as_bytes(), 200).expect_err("too long");
        assert_eq!(rules(&err), ["group_id_length"]);
        let err = parse_load(LoadKind::UpsertMemberships, br#"{"memberships":[]}"#, 200)
            .expect_err("empty");
        assert_eq!(rules(&err), ["empty_profiles"]);
        let err = parse_load(LoadKind::DeleteGroups, br#"{"externalIds":["a","b","c"]}"#, 2)
            .expect_err("too many");
        assert_eq!(rules(&err), ["max_profiles_per_request"]);
    }

    #[test]
    fn email_shape() {
        assert!(looks_like_email("a@b.co"));
        for bad in ["ab.co", "@b.co", "a@b", "a@.co", "a b@c.co", "a@b@c.co"] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }

    const KINDS: [LoadKind; 6] = [
        LoadKind::UpsertUsers,
        LoadKind::DeleteUsers,
        LoadKind::UpsertGroups,
        LoadKind::DeleteGroups,
        LoadKind::UpsertMemberships,
        LoadKind::DeleteMemberships,
    ];

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z@. ]{0,8}".prop_map(Value::String),
            prop_oneof![Just("USERS"), Just("externalId"), Just("profile")]
                .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("entityType".to_string()),
                        Just("profiles".to_string()),
                        Just("externalId".to_string()),
                        Just("externalIds".to_string()),
                        Just("profile".to_string()),
                        Just("memberships".to_string()),
                        Just("groupExternalId".to_string()),
                        Just("memberExternalIds".to_string()),
                        Just("email".to_string()),
                        "[a-z]{1,5}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), kind in 0usize..6) {
            let _ = parse_load(KINDS[kind], &body, 3);
        }

        #[test]
        fn never_panics_on_json(value in json_value(), kind in 0usize..6) {
            let body = serde_json::to_vec(&value).expect("serializable");
            if let Err(err) = parse_load(KINDS[kind], &body, 3) {
                // Every rejection is one of the two 400 families and says why.
                proptest::prop_assert!(err.code == "E0000001" || err.code == "E0000003");
                proptest::prop_assert!(!err.violations.is_empty());
            }
        }
    }
}
