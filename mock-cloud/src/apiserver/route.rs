//! Request paths: which resource, namespace, name and subresource a URL names.

use super::core::ApiCore;
use super::error::ApiError;
use crate::registry::ResourceInfo;

/// A parsed request path.
#[derive(Debug)]
pub(super) enum Route {
    Version,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    OpenApiV3Root,
    OpenApiV3(String),
    OpenApiV2,
    Health,
    Admin(Vec<String>),
    Resource(Box<ResourcePath>),
}

#[derive(Debug)]
pub(super) struct ResourcePath {
    pub(super) info: ResourceInfo,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
    pub(super) legacy_watch: bool,
}

pub(super) fn parse_route(core: &ApiCore, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::Api),
        ["apis"] => return Ok(Route::Apis),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3Root),
        ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiV3(rest.join("/"))),
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] | ["swagger.json"] => {
            return Ok(Route::OpenApiV2);
        }
        ["mock-cloud", rest @ ..] => {
            return Ok(Route::Admin(rest.iter().map(|x| x.to_string()).collect()));
        }
        ["apis", group] => return Ok(Route::Group(group.to_string())),
        ["api", version] => return Ok(Route::GroupVersion(String::new(), version.to_string())),
        ["apis", group, version] => {
            return Ok(Route::GroupVersion(group.to_string(), version.to_string()));
        }
        _ => {}
    }
    let (group, version, rest) = match s.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path()),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let lookup = |r: &str| core.info(group, version, r);
    let rp = |info: ResourceInfo, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        ResourcePath {
            info,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
            legacy_watch,
        }
    };
    let route = match rest {
        ["namespaces", ns, r, tail @ ..] if lookup(r).is_some_and(|i| i.namespaced) => {
            let info = lookup(r).expect("checked");
            match tail {
                [] => rp(info, Some(ns), None, None),
                [name] => rp(info, Some(ns), Some(name), None),
                [name, sub] => rp(info, Some(ns), Some(name), Some(sub)),
                _ => return Err(not_found_path()),
            }
        }
        [r, tail @ ..] => {
            let info = lookup(r).ok_or_else(not_found_path)?;
            match tail {
                [] => rp(info, None, None, None),
                [name] if !info.namespaced => rp(info, None, Some(name), None),
                [name, sub] if !info.namespaced => rp(info, None, Some(name), Some(sub)),
                _ => return Err(not_found_path()),
            }
        }
        [] => return Err(not_found_path()),
    };
    Ok(Route::Resource(Box::new(route)))
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn not_found_path() -> ApiError {
    let mut e = ApiError::not_found("", "");
    e.message = "the server could not find the requested resource".into();
    e.details = None;
    e
}
