"""Pure port plan of a site's KRaft nodes (no I/O): which port each node and its proxy listen on.

Node i (0-based) of a site whose first client port is P listens for clients on P + 10*i, for its
controller on + 1; with a link proxy, MirrorMaker 2's own listener is on + 2 and the toxiproxy in
front of it on + 3 (the address the broker advertises on that listener). One node without a proxy
is exactly the stack's historical layout: P and P + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

STRIDE = 10


@dataclass(frozen=True)
class NodePorts:
    node_id: int
    client: int
    controller: int
    link: int | None = None  # MirrorMaker 2's listener (bound by the broker)
    proxy: int | None = None  # the toxiproxy in front of `link`, advertised for it

    @property
    def ports(self) -> list[int]:
        return [p for p in (self.client, self.controller, self.link, self.proxy) if p is not None]


def site_nodes(first_port: int, count: int, link_proxy: bool = False) -> list[NodePorts]:
    """The ports of `count` nodes, ids 1..count."""
    nodes = []
    for i in range(count):
        base = first_port + STRIDE * i
        link = (base + 2, base + 3) if link_proxy else (None, None)
        nodes.append(NodePorts(i + 1, base, base + 1, *link))
    return nodes


def overlapping(a: list[NodePorts], b: list[NodePorts]) -> set[int]:
    """Ports planned twice across two sites (a bad choice of first ports)."""
    return {p for n in a for p in n.ports} & {p for n in b for p in n.ports}
