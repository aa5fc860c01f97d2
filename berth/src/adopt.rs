//! `berth adopt plan`: per Service, what `berth controller --adopt` would take over and
//! change, read-only (Kubernetes is only listed, the cloud only described).

use anyhow::Context;
use berth_controller::cli::ControllerArgs;
use berth_controller::factory::{self, ProviderKind};
use berth_controller::reconcile::adopt::previous_owner;
use berth_controller::service::{ClassFilter, key};
use berth_providers::adopt::{AdoptFrom, Adoption};
use berth_providers::l2::L2Provider;
use berth_providers::{LABEL_CLASS, Provider};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::fmt::Write;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct AdoptArgs {
    #[command(subcommand)]
    command: AdoptCommand,
}

#[derive(clap::Subcommand)]
enum AdoptCommand {
    /// Print, per Service, what `berth controller` with these flags would take over and
    /// change; writes nothing anywhere.
    Plan(Box<ControllerArgs>),
}

/// What one Service's take-over would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub service: String,
    pub outcome: Adoption,
}

/// The report `berth adopt plan` prints.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        out.push_str("No Service to take over.\n");
    }
    for l in lines {
        match &l.outcome {
            Adoption::Adoptable {
                from,
                load_balancer,
                address,
                changes,
            } => {
                let _ = writeln!(
                    out,
                    "{}: adopt from {from}: {load_balancer} ({address})",
                    l.service
                );
                for c in changes {
                    let _ = writeln!(out, "  - {c}");
                }
                if let Some(f) = from.finalizer() {
                    let _ = writeln!(
                        out,
                        "  - add berth's finalizer, then remove {f} once the load balancer is berth's"
                    );
                }
            }
            Adoption::AlreadyOwned { load_balancer } => {
                let _ = writeln!(out, "{}: already berth's: {load_balancer}", l.service);
            }
            Adoption::Refused(why) => {
                let _ = writeln!(out, "{}: not adopted: {why}", l.service);
            }
        }
    }
    out
}

pub async fn run(args: AdoptArgs) -> anyhow::Result<()> {
    let AdoptCommand::Plan(args) = args.command;
    let args = args.merge_file()?;
    if args.adopt.is_empty() {
        anyhow::bail!("--adopt is required (ccm-aws, aws-lbc, metallb)");
    }
    let client = crate::kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(berth_controller::metrics::Metrics::default());
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("Cannot list Services")?
        .items;
    let cluster = match &args.cluster_name {
        Some(c) => c.clone(),
        None => berth_controller::kube_util::cluster_id(&client).await?,
    };
    let mut lines = Vec::new();
    for spec in args.class_specs()? {
        let classes = ClassFilter::new(spec.class.clone(), spec.default_class);
        let mine: Vec<&Service> = services
            .iter()
            .filter(|s| classes.wants_load_balancer(s) && !classes.has_finalizer(s))
            .collect();
        match spec.provider {
            ProviderKind::L2 => {
                if spec.adopt.contains(&AdoptFrom::Metallb) {
                    lines.extend(l2_lines(&client, &mine, &cluster, &spec.class).await?);
                }
            }
            _ => {
                let built = factory::build(&spec, metrics.for_class(&spec.class))?;
                let provider = built.provider;
                let nodes = Api::<Node>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .context("Cannot list Nodes")?
                    .items;
                let mut targets = berth_controller::nodes::eligible_targets(nodes.iter());
                targets.retain(|t| provider.can_target(t));
                let targets: std::sync::Arc<[_]> = targets.into();
                for svc in mine {
                    let Some(from) = previous_owner(&spec.adopt, svc) else {
                        continue;
                    };
                    let outcome = match berth_controller::desired::desired_load_balancer(
                        svc,
                        &targets,
                        &cluster,
                        provider.needs_node_ports(),
                    ) {
                        Ok(mut d) => {
                            d.labels.insert(LABEL_CLASS.into(), spec.class.clone());
                            match provider
                                .plan_adoption(&d, from)
                                .await
                                .with_context(|| format!("Cannot plan {}", key(svc)))?
                            {
                                Adoption::Refused(why) => Adoption::Refused(format!(
                                    "{why}; the Service is left as it is"
                                )),
                                other => other,
                            }
                        }
                        Err(inv) => {
                            Adoption::Refused(format!("invalid {}: {}", inv.field, inv.message))
                        }
                    };
                    lines.push(Line {
                        service: key(svc),
                        outcome,
                    });
                }
            }
        }
    }
    print!("{}", render(&lines));
    Ok(())
}

/// MetalLB's addresses: which would be kept, on an l2 provider of berth's own (in memory)
/// loaded with the cluster's pools.
async fn l2_lines(
    client: &kube::Client,
    services: &[&Service],
    cluster: &str,
    class: &str,
) -> anyhow::Result<Vec<Line>> {
    let pools = Api::<berth_api::crd::IPAddressPool>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("Cannot list IPAddressPools")?
        .items;
    let l2 = L2Provider::new();
    l2.set_pools(&berth_api::crd::pool_specs(pools.iter()));
    for ns in Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("Cannot list namespaces")?
        .items
    {
        l2.set_namespace_labels(&ns.name_any(), ns.metadata.labels.unwrap_or_default());
    }
    let mut lines = Vec::new();
    for svc in services {
        let ips = berth_controller::pools::published_ips(svc);
        if ips.is_empty() {
            continue;
        }
        let shown = ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let outcome = match berth_controller::desired::desired_load_balancer(
            svc,
            &std::sync::Arc::from([]),
            cluster,
            false,
        ) {
            Ok(mut d) => {
                d.labels.insert(LABEL_CLASS.into(), class.to_string());
                match l2.keep_addresses(&d, &ips) {
                    Ok(_) => Adoption::Adoptable {
                        from: AdoptFrom::Metallb,
                        load_balancer: shown.clone(),
                        address: shown.clone(),
                        changes: vec![format!("keep {shown}; the speakers announce it")],
                    },
                    Err(e) => Adoption::Refused(format!(
                        "cannot keep {shown}: {}; berth would allocate another address",
                        e.summary()
                    )),
                }
            }
            Err(inv) => Adoption::Refused(format!("invalid {}: {}", inv.field, inv.message)),
        };
        lines.push(Line {
            service: key(svc),
            outcome,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_service_and_change() {
        let lines = vec![
            Line {
                service: "shop/web".into(),
                outcome: Adoption::Adoptable {
                    from: AdoptFrom::CcmAws,
                    load_balancer: "arn:lb".into(),
                    address: "web.elb".into(),
                    changes: vec!["tag it".into()],
                },
            },
            Line {
                service: "shop/old".into(),
                outcome: Adoption::Refused("a Classic ELB".into()),
            },
        ];
        let out = render(&lines);
        assert_eq!(
            out,
            "shop/web: adopt from ccm-aws: arn:lb (web.elb)\n  - tag it\n  - add berth's finalizer, then remove service.kubernetes.io/load-balancer-cleanup once the load balancer is berth's\nshop/old: not adopted: a Classic ELB\n"
        );
        assert_eq!(render(&[]), "No Service to take over.\n");
    }
}
