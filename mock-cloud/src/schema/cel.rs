//! `x-kubernetes-validations` rules, evaluated with the `cel` crate in an environment like
//! kube-apiserver's: the CEL standard library and macros, the strings extension, and the
//! parts of the Kubernetes IP and CIDR libraries berth's CRDs use (`isIP`, `ip`,
//! `family`, `isCIDR`, `cidr`, `prefixLength`, `containsIP`, and `ip` of a CIDR).
//!
//! Rules that mention `oldSelf` (transition rules) are not evaluated.

use cel::extractors::This;
use cel::objects::{Key, Map as CelMap, Opaque};
use cel::{Context, Env, ExecutionError, Program, Value as Cel};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The most compiled rules kept (a few per CRD; the cap bounds a hostile CRD).
const PROGRAM_CACHE_MAX: usize = 1024;

/// An IP address value (`ip('10.0.0.1')`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ip(pub IpAddr);

impl Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        "net.IP"
    }
}

/// A CIDR value (`cidr('10.0.0.0/8')`): the address as written and the prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr(pub IpAddr, pub u8);

impl Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        "net.CIDR"
    }
}

/// An address as the Kubernetes library takes it: no zone, no IPv4-mapped IPv6.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => None,
        _ => Some(ip),
    }
}

/// `ADDRESS/PREFIX` as the Kubernetes library takes it (the address may have host bits).
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (a, l) = s.split_once('/')?;
    let ip = parse_ip(a)?;
    let digits_ok = !l.is_empty()
        && l.len() <= 3
        && l.bytes().all(|b| b.is_ascii_digit())
        && (l == "0" || !l.starts_with('0'));
    let len: u8 = l.parse().ok().filter(|_| digits_ok)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(Cidr(ip, len))
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v) => (u32::from(v).into(), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        if self.0.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let ((net, width), (x, _)) = (bits(self.0), bits(ip));
        let shift = width - u32::from(self.1);
        if shift >= 128 {
            return true;
        }
        (net >> shift) == (x >> shift)
    }
}

fn opaque<T: Opaque + Clone>(v: &Cel) -> Option<T> {
    match v {
        Cel::Opaque(o) => o.downcast_ref::<T>().cloned(),
        _ => None,
    }
}

fn err(f: &str, msg: impl ToString) -> ExecutionError {
    ExecutionError::function_error(f, msg)
}

fn is_ip(s: Arc<String>) -> bool {
    parse_ip(&s).is_some()
}

fn is_cidr(s: Arc<String>) -> bool {
    parse_cidr(&s).is_some()
}

/// `ip('…')`, or `cidr.ip()`.
fn ip(This(v): This<Cel>) -> Result<Cel, ExecutionError> {
    if let Cel::String(s) = &v {
        let ip = parse_ip(s).ok_or_else(|| err("ip", format!("IP Address {s:?} parse error")))?;
        return Ok(Cel::Opaque(Arc::new(Ip(ip))));
    }
    let c: Cidr = opaque(&v).ok_or_else(|| err("ip", "expected a string or a CIDR"))?;
    Ok(Cel::Opaque(Arc::new(Ip(c.0))))
}

fn cidr(s: Arc<String>) -> Result<Cel, ExecutionError> {
    let c =
        parse_cidr(&s).ok_or_else(|| err("cidr", format!("network address {s:?} parse error")))?;
    Ok(Cel::Opaque(Arc::new(c)))
}

fn family(This(v): This<Cel>) -> Result<i64, ExecutionError> {
    let ip: Ip = opaque(&v).ok_or_else(|| err("family", "expected an IP"))?;
    Ok(if ip.0.is_ipv4() { 4 } else { 6 })
}

fn prefix_length(This(v): This<Cel>) -> Result<i64, ExecutionError> {
    let c: Cidr = opaque(&v).ok_or_else(|| err("prefixLength", "expected a CIDR"))?;
    Ok(c.1.into())
}

fn contains_ip(This(v): This<Cel>, arg: Cel) -> Result<bool, ExecutionError> {
    let c: Cidr = opaque(&v).ok_or_else(|| err("containsIP", "expected a CIDR"))?;
    let ip = match &arg {
        Cel::String(s) => parse_ip(s),
        other => opaque::<Ip>(other).map(|i| i.0),
    };
    let ip = ip.ok_or_else(|| err("containsIP", "expected an IP or an IP string"))?;
    Ok(c.contains(ip))
}

/// A JSON value as CEL sees it.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<Key, Cel> = m
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(CelMap { map: Arc::new(map) })
        }
    }
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .expect("the strings extension registers once");
        Arc::new(env)
    })
    .clone()
}

/// Compiles `rule`, or says why it does not compile (cached).
pub fn compile(rule: &str) -> Result<Arc<Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    let mut c = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = c.get(rule) {
        return Ok(p.clone());
    }
    let p = Arc::new(env().compile(rule).map_err(|e| e.to_string())?);
    if c.len() >= PROGRAM_CACHE_MAX {
        c.clear();
    }
    c.insert(rule.to_string(), p.clone());
    Ok(p)
}

/// Evaluates `rule` with `self` bound to `value`: Ok(true) when it holds.
pub fn eval(rule: &str, value: &Value) -> Result<bool, String> {
    let program = compile(rule)?;
    let mut ctx = Context::with_env(env());
    kubernetes_functions(&mut ctx).map_err(|e| format!("{e:?}"))?;
    ctx.add_variable_from_value("self", to_cel(value));
    match program.execute(&ctx) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("rule evaluated to {other:?}, not a bool")),
        Err(e) => Err(e.to_string()),
    }
}

fn kubernetes_functions(ctx: &mut Context) -> Result<(), cel::DeclarationError> {
    ctx.add_function("isIP", is_ip)?;
    ctx.add_function("ip", ip)?;
    ctx.add_function("family", family)?;
    ctx.add_function("isCIDR", is_cidr)?;
    ctx.add_function("cidr", cidr)?;
    ctx.add_function("prefixLength", prefix_length)?;
    ctx.add_function("containsIP", contains_ip)?;
    Ok(())
}
