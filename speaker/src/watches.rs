//! The speaker's watches: Nodes, Services and EndpointSlices (always served), and berth's
//! own L2Advertisements and IPAddressPools, whose CRDs may not be installed ([`CrdState`]).

use crate::{election, view};
use berth_api::crd::IPAddressPool;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::{info, warn};

/// What a watch of one of berth's own resources knows: nothing yet, that the resource is not
/// served (its CRD is not installed), or its objects by `namespace/name`.
#[derive(Debug, Clone)]
pub(crate) enum CrdState<T> {
    Unknown,
    NotServed,
    Objects(BTreeMap<String, T>),
}

impl<T> CrdState<T> {
    pub(crate) fn is_unknown(&self) -> bool {
        matches!(self, CrdState::Unknown)
    }

    pub(crate) fn objects(&self) -> Option<&BTreeMap<String, T>> {
        match self {
            CrdState::Objects(m) => Some(m),
            _ => None,
        }
    }
}

/// A [`CrdState`] kept up to date by a watch.
pub(crate) type Watched<T> = Arc<Mutex<CrdState<T>>>;

pub(crate) struct Watches {
    pub(crate) nodes: Store<Node>,
    pub(crate) services: Store<Service>,
    pub(crate) slices: Store<EndpointSlice>,
    pub(crate) advertisements: Watched<election::Advertisement>,
    pub(crate) pools: Watched<IPAddressPool>,
}

pub(crate) fn spawn_watch<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "Watch failed; retrying"),
            }
        }
    });
    reader
}

/// Watches one of berth's optional resources (L2Advertisements, IPAddressPools) into an
/// [`Watched`] `read(object)`: a cluster without the CRD is a state, not an error.
fn spawn_optional_watch<K, T>(
    api: Api<K>,
    kind: &'static str,
    if_absent: &'static str,
    read: fn(&K) -> T,
    changed: Arc<Notify>,
) -> Watched<T>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    T: Clone + Send + 'static,
{
    let state: Watched<T> = Arc::new(Mutex::new(CrdState::Unknown));
    let st = state.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut building: BTreeMap<String, T> = BTreeMap::new();
        let set = |v: CrdState<T>| {
            *st.lock().unwrap_or_else(|e| e.into_inner()) = v;
            changed.notify_one();
        };
        let name = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => building.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    building.insert(name(&o), read(&o));
                }
                Ok(watcher::Event::InitDone) => set(CrdState::Objects(building.clone())),
                Ok(watcher::Event::Apply(o)) => {
                    building.insert(name(&o), read(&o));
                    set(CrdState::Objects(building.clone()));
                }
                Ok(watcher::Event::Delete(o)) => {
                    building.remove(&name(&o));
                    set(CrdState::Objects(building.clone()));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if not_served(&e) {
                        let known_absent = matches!(
                            *st.lock().unwrap_or_else(|e| e.into_inner()),
                            CrdState::NotServed
                        );
                        if !known_absent {
                            info!("No {kind} resource is served; {if_absent}");
                            set(CrdState::NotServed);
                        }
                    } else {
                        warn!(error = %msg, "{kind} watch failed; retrying");
                    }
                }
            }
        }
    });
    state
}

/// Whether a watch failed because its resource is not served (its CRD is not installed):
/// the API server answered 404.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

pub(crate) fn spawn_advertisement_watch(
    client: Client,
    changed: Arc<Notify>,
) -> Watched<election::Advertisement> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("berth.io", "v1alpha1", "L2Advertisement"),
        "l2advertisements",
    );
    spawn_optional_watch(
        Api::<DynamicObject>::all_with(client, &ar),
        "L2Advertisement",
        "announcing every VIP",
        view::advertisement,
        changed,
    )
}

pub(crate) fn spawn_pool_watch(client: Client, changed: Arc<Notify>) -> Watched<IPAddressPool> {
    spawn_optional_watch(
        Api::<IPAddressPool>::all(client),
        "IPAddressPool",
        "L2Advertisements listing pools announce no VIP",
        IPAddressPool::clone,
        changed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_resource_is_told_by_its_status_code_not_its_text() {
        let status = |code: u16, message: &str| {
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": "x", "message": message,
            }))
            .unwrap()
        };
        let list = |code, m| watcher::Error::InitialListFailed(kube::Error::Api(status(code, m)));
        assert!(not_served(&list(
            404,
            "the server could not find the requested resource"
        )));
        assert!(
            !not_served(&list(500, "pool 404 not found in cache")),
            "text is not a code"
        );
        assert!(!not_served(&list(403, "NotFound? no: forbidden")));
        assert!(not_served(&watcher::Error::WatchError(status(404, ""))));
        assert!(!not_served(&watcher::Error::NoResourceVersion));
    }
}
