"""An independent view of moto for berth's aws tests: sets up a VPC, subnets and instances,
reads every load balancer, listener, target group and target, and makes foreign resources.
Uses boto3 only (never berth's code). Prints JSON on stdout.

Usage: moto_ctl.py ENDPOINT setup CLUSTER N_INSTANCES
       moto_ctl.py ENDPOINT state
       moto_ctl.py ENDPOINT foreign SUBNET_ID VPC_ID
       moto_ctl.py ENDPOINT instances N SUBNET_ID
       moto_ctl.py ENDPOINT groups
       moto_ctl.py ENDPOINT foreign-group VPC_ID
       moto_ctl.py ENDPOINT import-cert DOMAIN
       moto_ctl.py ENDPOINT previous OWNER NS/NAME UID CLUSTER SCHEME VPC SUBNETS PORTS INSTANCES
       moto_ctl.py ENDPOINT classic NS/NAME UID CLUSTER SUBNET
       moto_ctl.py ENDPOINT sample SECONDS ARN...
       moto_ctl.py ENDPOINT tag ARN KEY=VALUE...   (or: tag ARN KEY VALUE)
       moto_ctl.py ENDPOINT add-cidr VPC_ID CIDR
       moto_ctl.py ENDPOINT vpc-cidrs VPC_ID

previous: an NLB tagged as OWNER (legacy: the legacy AWS cloud provider; lbc: the AWS Load
Balancer Controller) tags it, with a listener and an instance target group per
PORT:NODEPORT (comma list), INSTANCES (comma list) registered.
sample: for SECONDS, reads each load balancer's listeners and their target groups' targets
over and over; prints every distinct (listener port, target group) seen and the samples in
which a listener forwarded to a group without targets.
"""

import json
import sys

import boto3
from botocore.exceptions import ClientError

REGION = "us-east-1"


def client(endpoint, name):
    return boto3.client(
        name,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def run_instances(ec2, n, subnet):
    if n == 0:
        return []
    image = ec2.describe_images()["Images"][0]["ImageId"]
    out = ec2.run_instances(
        ImageId=image, MinCount=n, MaxCount=n, InstanceType="t3.micro", SubnetId=subnet
    )
    return [
        {
            "id": i["InstanceId"],
            "zone": i["Placement"]["AvailabilityZone"],
            "ip": i.get("PrivateIpAddress"),
        }
        for i in out["Instances"]
    ]


def setup(endpoint, cluster, n):
    ec2 = client(endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = []
    for i, zone in enumerate(["us-east-1a", "us-east-1b"]):
        s = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=zone)
        sid = s["Subnet"]["SubnetId"]
        ec2.create_tags(
            Resources=[sid],
            Tags=[
                {"Key": "Name", "Value": f"berth-{zone}"},
                {"Key": "kubernetes.io/role/internal-elb", "Value": "1"},
                {"Key": "kubernetes.io/role/elb", "Value": ""},
                {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "shared"},
            ],
        )
        subnets.append({"id": sid, "zone": zone})
    # A subnet of another cluster in a third zone: discovery must skip it.
    other = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.9.0/24", AvailabilityZone="us-east-1c")
    ec2.create_tags(
        Resources=[other["Subnet"]["SubnetId"]],
        Tags=[
            {"Key": "kubernetes.io/role/internal-elb", "Value": "1"},
            {"Key": "kubernetes.io/cluster/someone-else", "Value": "owned"},
        ],
    )
    instances = run_instances(ec2, n, subnets[0]["id"])
    return {"vpc": vpc, "subnets": subnets, "instances": instances}


def tags_of(elb, arns):
    out = {}
    for i in range(0, len(arns), 20):
        try:
            descs = elb.describe_tags(ResourceArns=arns[i : i + 20])["TagDescriptions"]
        except ClientError:
            # One was deleted while we read: ask one by one.
            descs = []
            for arn in arns[i : i + 20]:
                try:
                    descs += elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
                except ClientError:
                    pass
        for d in descs:
            out[d["ResourceArn"]] = {t["Key"]: t.get("Value", "") for t in d.get("Tags", [])}
    return out


def state(endpoint):
    elb = client(endpoint, "elbv2")
    # Every page: moto, like AWS, answers at most a page of load balancers at a time.
    lbs = [
        l
        for page in elb.get_paginator("describe_load_balancers").paginate()
        for l in page["LoadBalancers"]
    ]
    tgs = [
        t
        for page in elb.get_paginator("describe_target_groups").paginate()
        for t in page["TargetGroups"]
    ]
    tags = tags_of(elb, [l["LoadBalancerArn"] for l in lbs] + [t["TargetGroupArn"] for t in tgs])
    out = {"loadBalancers": [], "targetGroups": []}
    for l in lbs:
        arn = l["LoadBalancerArn"]
        try:
            listeners = elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
        except ClientError:
            continue  # deleted while we read

        out["loadBalancers"].append(
            {
                "arn": arn,
                "name": l["LoadBalancerName"],
                "dns": l.get("DNSName"),
                "scheme": l.get("Scheme"),
                "type": l.get("Type"),
                "subnets": sorted(z.get("SubnetId") for z in l.get("AvailabilityZones", [])),
                "tags": tags.get(arn, {}),
                "securityGroups": sorted(l.get("SecurityGroups", [])),
                "listeners": [
                    {
                        "arn": x["ListenerArn"],
                        "port": x["Port"],
                        "protocol": x["Protocol"],
                        "certificates": [c["CertificateArn"] for c in x.get("Certificates", [])],
                        "sslPolicy": x.get("SslPolicy"),
                        "alpn": x.get("AlpnPolicy", []),
                        "targetGroup": next(
                            (a.get("TargetGroupArn") for a in x.get("DefaultActions", [])), None
                        ),
                    }
                    for x in listeners
                ],
            }
        )
    for t in tgs:
        arn = t["TargetGroupArn"]
        try:
            health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        except ClientError:
            continue  # deleted while we read

        out["targetGroups"].append(
            {
                "arn": arn,
                "name": t["TargetGroupName"],
                "protocol": t.get("Protocol"),
                "port": t.get("Port"),
                "targetType": t.get("TargetType"),
                "healthCheck": {
                    "protocol": t.get("HealthCheckProtocol"),
                    "port": t.get("HealthCheckPort"),
                    "path": t.get("HealthCheckPath"),
                    "interval": t.get("HealthCheckIntervalSeconds"),
                    "timeout": t.get("HealthCheckTimeoutSeconds"),
                    "healthy": t.get("HealthyThresholdCount"),
                    "unhealthy": t.get("UnhealthyThresholdCount"),
                },
                "tags": tags.get(arn, {}),
                "targets": sorted(
                    f'{h["Target"]["Id"]}:{h["Target"]["Port"]}' for h in health
                ),
            }
        )
    return out


def foreign(endpoint, subnet, vpc):
    elb = client(endpoint, "elbv2")
    lb = elb.create_load_balancer(
        Name="not-berths", Type="network", Scheme="internal", Subnets=[subnet],
        Tags=[{"Key": "owner", "Value": "someone"}],
    )["LoadBalancers"][0]
    tg = elb.create_target_group(
        Name="not-berths-tg", Protocol="TCP", Port=8080, VpcId=vpc, TargetType="instance",
        Tags=[{"Key": "berth.io/cluster", "Value": "test"}],
    )["TargetGroups"][0]
    elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=8080,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    return {"lb": lb["LoadBalancerArn"], "tg": tg["TargetGroupArn"]}


def rules(permissions):
    """Each ingress permission as "proto:from-to:source" strings."""
    out = []
    for p in permissions:
        span = f'{p["IpProtocol"]}:{p.get("FromPort", -1)}-{p.get("ToPort", -1)}'
        out += [f'{span}:{r["CidrIp"]}' for r in p.get("IpRanges", [])]
        out += [f'{span}:{r["CidrIpv6"]}' for r in p.get("Ipv6Ranges", [])]
        out += [f'{span}:{g["GroupId"]}' for g in p.get("UserIdGroupPairs", [])]
    return sorted(out)


def groups(endpoint):
    ec2 = client(endpoint, "ec2")
    out = []
    for g in ec2.describe_security_groups()["SecurityGroups"]:
        out.append(
            {
                "id": g["GroupId"],
                "name": g["GroupName"],
                "vpc": g.get("VpcId"),
                "ingress": rules(g.get("IpPermissions", [])),
                "tags": {t["Key"]: t.get("Value", "") for t in g.get("Tags", [])},
            }
        )
    return out


def foreign_group(endpoint, vpc):
    """A group berth did not create, carrying berth's cluster tag and an open rule."""
    ec2 = client(endpoint, "ec2")
    g = ec2.create_security_group(
        GroupName="not-berths-sg", Description="someone else's", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": [{"Key": "berth.io/cluster", "Value": "test"}]}],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=g, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                   "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}],
    )
    return {"id": g}


def import_cert(endpoint, domain):
    """A self-signed certificate for DOMAIN imported into ACM; its ARN."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    acm = client(endpoint, "acm")
    arn = acm.import_certificate(
        Certificate=cert.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )["CertificateArn"]
    return {"arn": arn}
def previous(endpoint, owner, ns_name, uid, cluster, scheme, vpc, subnets, ports, instances):
    elb = client(endpoint, "elbv2")
    ns, name = ns_name.split("/")
    if owner == "legacy":
        lb_name = ("a" + uid.replace("-", ""))[:32]
        lb_tags = {"kubernetes.io/service-name": ns_name, f"kubernetes.io/cluster/{cluster}": "owned"}
    else:
        lb_name = f"k8s-{ns[:8]}-{name[:8]}-{uid.replace('-', '')[:10]}"
        lb_tags = {
            "service.k8s.aws/stack": ns_name,
            "elbv2.k8s.aws/cluster": cluster,
            "service.k8s.aws/resource": "LoadBalancer",
        }
    tag_list = lambda d: [{"Key": k, "Value": v} for k, v in d.items()]
    lb = elb.create_load_balancer(
        Name=lb_name, Type="network", Scheme=scheme, Subnets=subnets.split(","),
        Tags=tag_list(lb_tags),
    )["LoadBalancers"][0]
    tgs = []
    for pair in ports.split(","):
        port, node_port = (int(x) for x in pair.split(":"))
        if owner == "legacy":
            tg_name = f"k8s-{ns[:8]}-{name[:8]}-{uid.replace('-', '')[:8]}{port}"[:32]
            tg_tags = dict(lb_tags)
            tg_tags["kubernetes.io/service-port"] = str(port)
        else:
            tg_name = f"k8s-{ns[:8]}-{name[:8]}-{port}-{uid.replace('-', '')[:6]}"[:32]
            tg_tags = dict(lb_tags)
            tg_tags["service.k8s.aws/resource"] = f"{ns_name}:{port}"
        tg = elb.create_target_group(
            Name=tg_name, Protocol="TCP", Port=node_port, VpcId=vpc, TargetType="instance",
            Tags=tag_list(tg_tags),
        )["TargetGroups"][0]
        elb.register_targets(
            TargetGroupArn=tg["TargetGroupArn"],
            Targets=[{"Id": i, "Port": node_port} for i in instances.split(",")],
        )
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )
        tgs.append(tg["TargetGroupArn"])
    return {"arn": lb["LoadBalancerArn"], "dns": lb["DNSName"], "name": lb_name, "tgs": tgs}


def switch(endpoint, lb_arn, port, vpc, node_port, instances):
    """Moves the listener on `port` to a new untagged target group holding `instances`, as a
    take-over cut off right after switching would leave it; the old group stays."""
    elb = client(endpoint, "elbv2")
    tg = elb.create_target_group(
        Name=f"cut-{port}-{lb_arn.rsplit('/', 1)[-1][:12]}", Protocol="TCP", Port=int(node_port),
        VpcId=vpc, TargetType="instance",
    )["TargetGroups"][0]
    elb.register_targets(
        TargetGroupArn=tg["TargetGroupArn"],
        Targets=[{"Id": i, "Port": int(node_port)} for i in instances.split(",")],
    )
    listener = next(
        x for x in elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"] if x["Port"] == int(port)
    )
    elb.modify_listener(
        ListenerArn=listener["ListenerArn"],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    return {"tg": tg["TargetGroupArn"]}


def classic(endpoint, ns_name, uid, cluster, subnet):
    elb = client(endpoint, "elb")
    name = ("a" + uid.replace("-", ""))[:32]
    out = elb.create_load_balancer(
        LoadBalancerName=name,
        Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 30080}],
        Subnets=[subnet],
        Tags=[
            {"Key": "kubernetes.io/service-name", "Value": ns_name},
            {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"},
        ],
    )
    return {"name": name, "dns": out["DNSName"]}


def sample(endpoint, seconds, arns):
    import time

    elb = client(endpoint, "elbv2")
    seen = set()
    empty = []
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        n += 1
        for arn in arns:
            try:
                listeners = elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
            except ClientError as e:
                empty.append({"sample": n, "lb": arn, "error": str(e)})
                continue
            if not listeners:
                empty.append({"sample": n, "lb": arn, "error": "no listeners"})
            for x in listeners:
                tg = next((a.get("TargetGroupArn") for a in x.get("DefaultActions", [])), None)
                seen.add((arn, x["Port"], tg))
                try:
                    targets = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
                except ClientError as e:
                    targets = []
                if not targets:
                    empty.append({"sample": n, "lb": arn, "port": x["Port"], "targetGroup": tg})
        time.sleep(0.05)
    return {
        "samples": n,
        "seen": [{"lb": a, "port": p, "targetGroup": t} for a, p, t in sorted(seen)],
        "empty": empty,
    }


def attributes(endpoint, arns):
    """The attributes of each load balancer or target group in ARNS, as {arn: {key: value}}."""
    elb = client(endpoint, "elbv2")
    out = {}
    for arn in arns:
        if ":loadbalancer/" in arn:
            attrs = elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
        else:
            attrs = elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
        out[arn] = {a["Key"]: a.get("Value", "") for a in attrs}
    return out


def main():
    endpoint, cmd, *args = sys.argv[1:]
    if cmd == "setup":
        out = setup(endpoint, args[0], int(args[1]))
    elif cmd == "state":
        out = state(endpoint)
    elif cmd == "foreign":
        out = foreign(endpoint, args[0], args[1])
    elif cmd == "groups":
        out = groups(endpoint)
    elif cmd == "foreign-group":
        out = foreign_group(endpoint, args[0])
    elif cmd == "import-cert":
        out = import_cert(endpoint, args[0])
    elif cmd == "previous":
        out = previous(endpoint, *args)
    elif cmd == "switch":
        out = switch(endpoint, *args)
    elif cmd == "classic":
        out = classic(endpoint, *args)
    elif cmd == "tag":
        if len(args) == 3 and "=" not in args[1]:
            tags = [{"Key": args[1], "Value": args[2]}]
        else:
            tags = [dict(zip(("Key", "Value"), kv.split("=", 1))) for kv in args[1:]]
        client(endpoint, "elbv2").add_tags(ResourceArns=[args[0]], Tags=tags)
        out = {}
    elif cmd == "deregister":
        # deregister TG_ARN ID PORT: drift made by someone else.
        client(endpoint, "elbv2").deregister_targets(
            TargetGroupArn=args[0], Targets=[{"Id": args[1], "Port": int(args[2])}]
        )
        out = {}
    elif cmd == "add-cidr":
        # add-cidr VPC CIDR: a secondary CIDR block (the addresses the cluster's pods get).
        client(endpoint, "ec2").associate_vpc_cidr_block(VpcId=args[0], CidrBlock=args[1])
        out = {}
    elif cmd == "vpc-cidrs":
        # vpc-cidrs VPC: every CIDR block of the VPC, primary first.
        vpc = client(endpoint, "ec2").describe_vpcs(VpcIds=[args[0]])["Vpcs"][0]
        out = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])]
    elif cmd == "sample":
        out = sample(endpoint, float(args[0]), args[1:])
    elif cmd == "attributes":
        out = attributes(endpoint, args)
    elif cmd == "instances":
        out = run_instances(client(endpoint, "ec2"), int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
