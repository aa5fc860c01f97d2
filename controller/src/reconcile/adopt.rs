//! Taking over a Service another controller served (`--adopt`): before berth's finalizer
//! goes on, the provider is asked (read-only) whether the load balancer can be taken over —
//! if not, a Warning names why and the Service is left exactly as it is. The previous
//! owner's finalizer comes off only once berth's finalizer is on and berth has ensured the
//! load balancer (the provider's `ensure` does the take-over itself).

use super::{Context, Done, Error, invalid_input, locked};
use crate::service::{has_finalizer, key, uid};
use berth_providers::adopt::{AdoptFrom, Adoption};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

/// Warning: the Service's load balancer cannot be taken over; the note says why.
pub const ADOPTION_REFUSED: &str = "AdoptLoadBalancerRefused";
/// Warning: the address MetalLB assigned cannot be kept; the note says why.
pub const ADDRESS_NOT_KEPT: &str = "AdoptAddressFailed";
/// Normal: berth took over the load balancer and removed the previous owner's finalizer.
pub const ADOPTED: &str = "AdoptedLoadBalancer";

/// The configured previous owner whose finalizer `svc` still carries.
pub fn previous_owner(sources: &[AdoptFrom], svc: &Service) -> Option<AdoptFrom> {
    svc.metadata
        .finalizers
        .iter()
        .flatten()
        .find_map(|f| AdoptFrom::by_finalizer(sources, f))
}

/// Before berth's finalizer goes on: Some(done) when the Service must be left alone.
pub(super) async fn gate(svc: &Service, ctx: &Context) -> Result<Option<Done>, Error> {
    if ctx.settings.adopt.contains(&AdoptFrom::Metallb) {
        keep_addresses(svc, ctx).await;
    }
    let Some(from) = previous_owner(&ctx.settings.adopt, svc) else {
        return Ok(None);
    };
    let targets = ctx.targets();
    let desired = match ctx.desired(svc, &targets) {
        Ok(d) => d,
        Err(inv) => return invalid_input(svc, ctx, inv).await.map(Some),
    };
    let why = match ctx
        .call("plan_adoption", ctx.provider.plan_adoption(&desired, from))
        .await?
    {
        Adoption::Adoptable { .. } | Adoption::AlreadyOwned { .. } => return Ok(None),
        Adoption::Refused(why) => why,
    };
    ctx.warn_once(
        svc,
        ADOPTION_REFUSED,
        format!("Not taking over from {from}: {why}; the Service is left as it is"),
    )
    .await;
    info!(service = %key(svc), %from, reason = %why, "Not taking over the load balancer");
    Ok(Some(Done::new(Action::await_change(), "invalid")))
}

/// MetalLB's addresses: the ones the Service shows stay its own when they lie in a pool of
/// berth's and are free; otherwise a Warning says why and berth allocates as usual.
async fn keep_addresses(svc: &Service, ctx: &Context) {
    let ips = crate::pools::published_ips(svc);
    if ips.is_empty() {
        return;
    }
    let Ok(d) = ctx.desired(svc, &std::sync::Arc::from([])) else {
        return; // invalid: the apply reports it
    };
    let shown = ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match ctx.provider.keep_addresses(&d, &ips) {
        Ok(true) => {
            info!(service = %key(svc), addresses = %shown, "Keeping the addresses MetalLB assigned")
        }
        Ok(false) => {}
        Err(e) => {
            ctx.warn_once(
                svc,
                ADDRESS_NOT_KEPT,
                format!(
                    "Cannot keep {shown} from metallb: {}; berth allocates another address",
                    super::provider_message(&e)
                ),
            )
            .await
        }
    }
}

/// After an apply: once berth's finalizer is on and its load balancer has an address, the
/// previous owner's finalizer comes off.
pub(super) async fn release(svc: &Service, ctx: &Context) -> Result<(), Error> {
    let Some(from) = previous_owner(&ctx.settings.adopt, svc) else {
        return Ok(());
    };
    let Some(finalizer) = from.finalizer() else {
        return Ok(());
    };
    let served = locked(&ctx.ensured)
        .get(&uid(svc))
        .is_some_and(|e| !e.status.ingress.is_empty());
    if !served || !has_finalizer(svc, &ctx.settings.classes.finalizer) {
        return Ok(());
    }
    let Some(i) = svc
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == finalizer)
    else {
        return Ok(());
    };
    let patch = json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    match ctx
        .api(svc)
        .patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(Error::Kube(e)),
    }
    ctx.event(
        svc,
        EventType::Normal,
        ADOPTED,
        format!("Took over the load balancer from {from}; removed its finalizer {finalizer}"),
    )
    .await;
    info!(service = %key(svc), %from, "Took over the load balancer");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_providers::adopt::{CCM_FINALIZER, LBC_FINALIZER};

    fn with_finalizers(fs: &[&str]) -> Service {
        let mut s = Service::default();
        s.metadata.finalizers = Some(fs.iter().map(|f| f.to_string()).collect());
        s
    }

    #[test]
    fn only_configured_previous_owners_count() {
        let ccm = with_finalizers(&["other.io/x", CCM_FINALIZER]);
        let lbc = with_finalizers(&[LBC_FINALIZER]);
        let all = [AdoptFrom::CcmAws, AdoptFrom::AwsLbc];
        assert_eq!(previous_owner(&all, &ccm), Some(AdoptFrom::CcmAws));
        assert_eq!(previous_owner(&all, &lbc), Some(AdoptFrom::AwsLbc));
        assert_eq!(previous_owner(&[AdoptFrom::AwsLbc], &ccm), None);
        assert_eq!(previous_owner(&[], &lbc), None);
        assert_eq!(previous_owner(&all, &Service::default()), None);
        assert_eq!(previous_owner(&[AdoptFrom::Metallb], &ccm), None);
    }
}
