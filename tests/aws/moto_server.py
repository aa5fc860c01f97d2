"""moto in server mode, with ELBv2's tag quota as AWS documents it.

moto refuses a tag on an ELBv2 resource that already has 10 (the Classic ELB's old quota);
ELBv2 load balancers and target groups take 50 per resource. An NLB taken over from another
controller carries that controller's tags next to berth's, so the tests need the real quota.
Everything else is moto's own `moto_server` (same arguments).
"""

import sys

from moto.elbv2 import models
from moto.elbv2.exceptions import TooManyTagsError

TAGS_PER_RESOURCE = 50


def add_tags(self, resource_arns, tags):
    wanted = self.tagging_service.flatten_tag_list(tags)
    for arn in resource_arns:
        existing = self.tagging_service.get_tag_dict_for_resource(arn)
        if len(set(existing) | set(wanted)) > TAGS_PER_RESOURCE:
            raise TooManyTagsError()
        self._get_resource_by_arn(arn)
        self.tagging_service.tag_resource(arn, tags)


models.ELBv2Backend.add_tags = add_tags

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
