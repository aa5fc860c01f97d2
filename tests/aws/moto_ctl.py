"""An independent view of moto for berth's aws tests: sets up a VPC, subnets and instances,
reads every load balancer, listener, target group and target, and makes foreign resources.
Uses boto3 only (never berth's code). Prints JSON on stdout.

Usage: moto_ctl.py ENDPOINT setup CLUSTER N_INSTANCES
       moto_ctl.py ENDPOINT state
       moto_ctl.py ENDPOINT foreign SUBNET_ID VPC_ID
       moto_ctl.py ENDPOINT instances N SUBNET_ID
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
                "listeners": [
                    {
                        "port": x["Port"],
                        "protocol": x["Protocol"],
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


def main():
    endpoint, cmd, *args = sys.argv[1:]
    if cmd == "setup":
        out = setup(endpoint, args[0], int(args[1]))
    elif cmd == "state":
        out = state(endpoint)
    elif cmd == "foreign":
        out = foreign(endpoint, args[0], args[1])
    elif cmd == "instances":
        out = run_instances(client(endpoint, "ec2"), int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
