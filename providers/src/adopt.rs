//! Taking over load balancers another controller made: where they may come from, and what a
//! provider found when asked (plain types; the aws provider's search is in `aws/adopt.rs`).

use std::fmt;

/// The controller a cluster ran before berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdoptFrom {
    /// The cloud-controller-manager's service controller with the legacy AWS provider.
    CcmAws,
    /// The AWS Load Balancer Controller (NLB mode).
    AwsLbc,
    /// MetalLB (layer 2 or BGP): only the addresses it assigned.
    Metallb,
}

/// `service.kubernetes.io/load-balancer-cleanup`: the cloud-controller-manager's finalizer.
pub const CCM_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
/// `service.k8s.aws/resources`: the AWS Load Balancer Controller's finalizer.
pub const LBC_FINALIZER: &str = "service.k8s.aws/resources";

impl AdoptFrom {
    /// Every source, in the order the flag documents them.
    pub const ALL: [AdoptFrom; 3] = [AdoptFrom::CcmAws, AdoptFrom::AwsLbc, AdoptFrom::Metallb];

    /// The name the `--adopt` flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            AdoptFrom::CcmAws => "ccm-aws",
            AdoptFrom::AwsLbc => "aws-lbc",
            AdoptFrom::Metallb => "metallb",
        }
    }

    /// Parses one `--adopt` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown --adopt source {s:?}; accepted: \"ccm-aws\", \"aws-lbc\", \"metallb\""
                )
            })
    }

    /// The finalizer the previous owner puts on the Services it serves (MetalLB has none).
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            AdoptFrom::CcmAws => Some(CCM_FINALIZER),
            AdoptFrom::AwsLbc => Some(LBC_FINALIZER),
            AdoptFrom::Metallb => None,
        }
    }

    /// The source whose finalizer is `f`, among `sources`.
    pub fn by_finalizer(sources: &[AdoptFrom], f: &str) -> Option<AdoptFrom> {
        sources.iter().copied().find(|s| s.finalizer() == Some(f))
    }
}

impl fmt::Display for AdoptFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider found for a Service another controller served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Its load balancer can be taken over: `load_balancer` names it (an ARN, an address),
    /// `changes` lists what taking it over changes, in order, for people to read.
    Adoptable {
        from: AdoptFrom,
        load_balancer: String,
        address: String,
        changes: Vec<String>,
    },
    /// berth already carries its ownership on it (a take-over that was interrupted, or done).
    AlreadyOwned { load_balancer: String },
    /// It cannot be taken over; the text says why. Nothing may be changed.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_name_their_finalizers() {
        for f in AdoptFrom::ALL {
            assert_eq!(AdoptFrom::parse(f.as_str()), Ok(f));
        }
        assert_eq!(AdoptFrom::parse(" aws-lbc "), Ok(AdoptFrom::AwsLbc));
        let e = AdoptFrom::parse("ccm").unwrap_err();
        assert!(e.contains("ccm-aws") && e.contains("metallb"), "{e}");
        let all = AdoptFrom::ALL;
        assert_eq!(
            AdoptFrom::by_finalizer(&all, CCM_FINALIZER),
            Some(AdoptFrom::CcmAws)
        );
        assert_eq!(
            AdoptFrom::by_finalizer(&all, LBC_FINALIZER),
            Some(AdoptFrom::AwsLbc)
        );
        assert_eq!(
            AdoptFrom::by_finalizer(&[AdoptFrom::Metallb], CCM_FINALIZER),
            None
        );
        assert_eq!(AdoptFrom::Metallb.finalizer(), None);
    }
}
