"""A scheduler policy in Python: prefer (or require) the nodes of one zone, and keep off
cordoned nodes.

It implements the `scheduler-policy` world of wit/plugin.wit, as plugins/default-policy
(Rust) does: the host sends it node changes as they happen (`apply`) and asks it once per
pod (`schedule`) with the candidate node indices. Config: {"zone": "zone-b"} (the value of
topology.kubernetes.io/zone to prefer), and "required": true to reject nodes elsewhere.
Build with scripts/build-examples (componentize-py).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.scheduler_types import (
    Change_NodeRemoved,
    Change_NodeSet,
    Placement,
    Rejection,
)

ZONE = "topology.kubernetes.io/zone"
CORDONED = "node(s) were unschedulable"
MISSING = "node(s) were not found"


# The policy's state lives in the module: componentize-py makes a new `Policy` for each
# call, while the module lives as long as the instance (one node table per instance).
STATE = {"zone": None, "required": False, "nodes": {}}  # nodes: by index, (zone or None, unschedulable)


class Policy(exports.Policy):
    def configure(self, config):
        try:
            parsed = json.loads(config)
            zone, required = parsed.get("zone"), parsed.get("required", False)
        except (ValueError, AttributeError) as e:
            raise Err(f"config must be a JSON object: {e}")
        if not isinstance(zone, str) or not zone:
            raise Err('config needs "zone", the topology.kubernetes.io/zone to prefer, e.g. {"zone": "zone-b"}')
        if not isinstance(required, bool):
            raise Err(f'config\'s "required" must be true or false, not {required!r}')
        STATE["zone"], STATE["required"] = zone, required

    def apply(self, changes):
        nodes = STATE["nodes"]
        for change in changes:
            if isinstance(change, Change_NodeSet):
                node = change.value
                nodes[node.index] = (dict(node.labels).get(ZONE), node.unschedulable)
            elif isinstance(change, Change_NodeRemoved):
                nodes.pop(change.value, None)
            # Pods placed or removed do not change what this policy decides.

    def schedule(self, pod, candidates):
        feasible, scores, rejections, reasons = [], [], [], []

        def reject(node, reason):
            if reason not in reasons:
                reasons.append(reason)
            rejections.append(Rejection(node=node, reason=reasons.index(reason)))

        for index in candidates:
            node = STATE["nodes"].get(index)
            if node is None:
                reject(index, MISSING)
            elif node[1]:
                reject(index, CORDONED)
            elif STATE["required"] and node[0] != STATE["zone"]:
                reject(index, f"node(s) were not in zone {STATE['zone']}")
            else:
                feasible.append(index)
                scores.append(100 if node[0] == STATE["zone"] else 0)
        return Placement(feasible=feasible, scores=scores, rejections=rejections, reasons=reasons)
