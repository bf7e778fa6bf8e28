# A Swarm of three Docker engines on this machine, for bench/swarm-three-nodes.sh. Source it;
# do not run it. Needs root (network namespaces, dockerd).
#
# Each node is its own `dockerd` (own data root, exec root, pid file, socket, config file and
# the containerd it manages itself) started in its own network namespace and UTS namespace
# (hostname swarm-n1…n3), linked by a veth pair to a bridge in the root namespace:
#
#   root namespace: bridge $SW_BRIDGE 10.231.$SW_NET.1/24  (the registry listens here)
#     ├─ veth ── netns $SW_PREFIX-n1  eth0 10.231.$SW_NET.2   manager (advertises this address)
#     ├─ veth ── netns $SW_PREFIX-n2  eth0 10.231.$SW_NET.3   worker
#     └─ veth ── netns $SW_PREFIX-n3  eth0 10.231.$SW_NET.4   worker
#
# The root namespace's Docker sets the FORWARD policy to DROP and bridged traffic goes through
# iptables, so two rules in DOCKER-USER (FORWARD without it) accept what crosses the bridge
# (removed by swarm_nodes_down). The machine's own engine and its one-node Swarm are never touched: this is a
# separate Swarm. Storage driver vfs (the images are FROM scratch and tiny).

SW_ID="${SW_ID:-$(( $$ % 10000 ))}"
SW_NET="${SW_NET:-$(( 100 + $$ % 100 ))}"
SW_PREFIX="csw$SW_ID"
SW_BRIDGE="${SW_PREFIX}b"
SW_GW="10.231.$SW_NET.1"
SW_NODES=(n1 n2 n3)

# sw_addr NODE: the node's address.
sw_addr() { case "$1" in n1) echo "10.231.$SW_NET.2" ;; n2) echo "10.231.$SW_NET.3" ;; n3) echo "10.231.$SW_NET.4" ;; esac; }
# sw_docker NODE ARGS...: the docker CLI against that node's engine.
sw_docker() { local n="$1"; shift; docker -H "unix://$SW_DIR/$n/docker.sock" "$@"; }

# swarm_nodes_up DIR INSECURE_REGISTRY: the network, three engines, one Swarm.
swarm_nodes_up() {
    SW_DIR="$1"
    local registry="$2" n i=2
    [ "$(id -u)" = 0 ] || die "the three-node Swarm needs root (network namespaces, dockerd)"
    command -v dockerd >/dev/null || die "no dockerd"
    ip link add "$SW_BRIDGE" type bridge
    ip addr add "$SW_GW/24" dev "$SW_BRIDGE"
    ip link set "$SW_BRIDGE" up
    SW_CHAIN=FORWARD
    iptables -S DOCKER-USER >/dev/null 2>&1 && SW_CHAIN=DOCKER-USER
    iptables -I "$SW_CHAIN" -i "$SW_BRIDGE" -j ACCEPT
    iptables -I "$SW_CHAIN" -o "$SW_BRIDGE" -j ACCEPT
    for n in "${SW_NODES[@]}"; do
        ip netns add "$SW_PREFIX-$n"
        ip link add "$SW_PREFIX$n" type veth peer name eth0 netns "$SW_PREFIX-$n"
        ip link set "$SW_PREFIX$n" master "$SW_BRIDGE" up
        ip -n "$SW_PREFIX-$n" addr add "10.231.$SW_NET.$i/24" dev eth0
        ip -n "$SW_PREFIX-$n" link set eth0 up
        ip -n "$SW_PREFIX-$n" link set lo up
        ip -n "$SW_PREFIX-$n" route add default via "$SW_GW"
        i=$((i + 1))
        mkdir -p "$SW_DIR/$n/data" "$SW_DIR/$n/exec"
        printf '{"insecure-registries": ["%s"], "storage-driver": "vfs", "log-driver": "json-file"}\n' \
            "$registry" >"$SW_DIR/$n/daemon.json"
        # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts dockerd needs.
        nsenter --net="/var/run/netns/$SW_PREFIX-$n" unshare --uts sh -c '
            hostname "swarm-$1"
            exec dockerd --config-file "$2/daemon.json" --data-root "$2/data" --exec-root "$2/exec" \
                --pidfile "$2/docker.pid" -H "unix://$2/docker.sock"
        ' node "$n" "$SW_DIR/$n" >"$SW_DIR/$n/dockerd.log" 2>&1 &
    done
    for n in "${SW_NODES[@]}"; do
        for _ in $(seq 300); do sw_docker "$n" version >/dev/null 2>&1 && break; sleep 0.1; done
        sw_docker "$n" version >/dev/null 2>&1 || die "dockerd of $n did not answer: $(tail -5 "$SW_DIR/$n/dockerd.log")"
    done
    sw_docker n1 swarm init --advertise-addr "$(sw_addr n1)" --listen-addr "$(sw_addr n1):2377" \
        --dispatcher-heartbeat 1s >/dev/null || die "swarm init on n1 failed"
    local token
    token=$(sw_docker n1 swarm join-token -q worker)
    for n in n2 n3; do
        sw_docker "$n" swarm join --token "$token" --advertise-addr "$(sw_addr "$n")" "$(sw_addr n1):2377" >/dev/null \
            || die "$n could not join: $(tail -5 "$SW_DIR/$n/dockerd.log")"
    done
    for _ in $(seq 100); do
        [ "$(sw_docker n1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] && return 0
        sleep 0.2
    done
    die "not every node is Ready: $(sw_docker n1 node ls)"
}

# swarm_node_kill NODE: the node dies as a machine would: its link goes down, then every
# process in its namespace (dockerd, containerd, shims, the app) gets SIGKILL. Link first: a
# machine that loses power sends nothing more, while a dockerd killed after its app could still
# tell the manager that the task exited (a task that ended, not one lost with its node).
swarm_node_kill() {
    local n="$1" p
    ip link set "$SW_PREFIX$n" down
    for p in $(ip netns pids "$SW_PREFIX-$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
}

# swarm_nodes_down: every node's processes, the namespaces, the bridge, the iptables rules.
swarm_nodes_down() {
    local n p
    for n in "${SW_NODES[@]}"; do
        for p in $(ip netns pids "$SW_PREFIX-$n" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
    done
    sleep 2
    for n in "${SW_NODES[@]}"; do
        for p in $(ip netns pids "$SW_PREFIX-$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        # vfs layers and the containers' mounts live under the node's dirs.
        grep -o " $SW_DIR/$n/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        ip link del "$SW_PREFIX$n" 2>/dev/null || true
        ip netns del "$SW_PREFIX-$n" 2>/dev/null || true
    done
    iptables -D "${SW_CHAIN:-DOCKER-USER}" -i "$SW_BRIDGE" -j ACCEPT 2>/dev/null || true
    iptables -D "${SW_CHAIN:-DOCKER-USER}" -o "$SW_BRIDGE" -j ACCEPT 2>/dev/null || true
    ip link del "$SW_BRIDGE" 2>/dev/null || true
}
