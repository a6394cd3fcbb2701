"""Kolla-Ansible's own precheck run against generated files, with no target host contacted.

What runs is the release's real ``site.yml`` with ``kolla_action=precheck``,
the way ``kolla-ansible prechecks`` calls it (``-e @globals.yml -e
@passwords.yml -e CONFIG_DIR=...``), on a copy of the release's ``ansible/``
tree in which every task file is filtered:

- kept as they are: the tasks Ansible evaluates on the deploy host
  (``fail``, ``assert``, ``debug``, ``set_fact``, ``group_by``, ``add_host``, includes,
  ``meta``), and ``stat``/``find``/``grep`` delegated to ``localhost``: they
  read the deploy host's files (``CONFIG_DIR``, ``passwords.yml``), which is
  what they do in production;
- removed: every other module (they need the target host: containers,
  ports, packages, clocks), and every task that reads what a removed task
  would have registered, since its answer would be made up.

Host facts come from a jsonfile fact cache written per host from the site
inventory (its interfaces and addresses, the OS the images are built for),
so ``gather-facts.yml`` runs unchanged and finds them; every host uses
``ansible_connection=local``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import kolla_fixture as kf
import kolla_tools as kt
from cloudplan.inventory import Inventory

KEEP = {"fail", "assert", "debug", "set_fact", "group_by", "add_host", "include_tasks", "import_tasks", "include_role",
        "import_role", "meta", "include_vars"}
# Read-only modules that run on the deploy host when delegated to localhost; of
# commands, only grep (the check for empty values in passwords.yml).
LOCAL_READ = {"stat", "find"}
LOCAL_READ_COMMAND = "grep "
TASK_KEYWORDS = {
    "name", "when", "register", "vars", "loop", "loop_control", "delegate_to", "delegate_facts", "run_once",
    "become", "become_user", "become_method", "changed_when", "failed_when", "check_mode", "ignore_errors",
    "tags", "notify", "environment", "until", "retries", "delay", "no_log", "args", "listen",
    "any_errors_fatal", "throttle", "block", "rescue", "always", "connection", "module_defaults", "diff",
    "timeout", "ignore_unreachable", "collections", "debugger", "port", "remote_user",
}
# The hosts run the OS the ubuntu Kolla images are built for, on every supported release.
HOST_OS = {"distribution": "Ubuntu", "distribution_release": "noble", "distribution_version": "24.04",
           "distribution_major_version": "24", "os_family": "Debian"}


def _module(task: dict) -> str | None:
    for key in task:
        if key not in TASK_KEYWORDS and not key.startswith("with_"):
            return key.rsplit(".", 1)[-1] if key.startswith(("ansible.builtin.", "ansible.legacy.")) else key
    return None


def _command(task: dict) -> str:
    args = next(v for k, v in task.items() if _module({k: v}) == "command")
    return str(args.get("cmd", "") if isinstance(args, dict) else args)


def _refs(task: dict) -> str:
    """The task's text without its name and its own register: where variable references live."""
    return yaml.safe_dump({k: v for k, v in task.items() if k not in ("name", "register")}, default_flow_style=True)


@dataclass
class Filter:
    """Keeps the deploy-host tasks; removes the others and every task reading what they produce.

    A registered result is read in the file that registers it: a task is removed when the last
    registration of a name it reads, earlier in its file, was a removed task. Facts set by a removed
    ``set_fact`` are read anywhere, so they are tracked across files (to a fixpoint).
    """

    facts: set[str] = field(default_factory=set)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)  # removed registrations, in the current file

    def _reads_tainted(self, task: dict) -> bool:
        # A task's failed_when/until reads its own result, not an earlier one of the same name.
        names = (self.facts | self.registered) - {str(task.get("register", ""))}
        text = _refs(task)
        return any(re.search(rf"\b{re.escape(n)}\b", text) for n in names)

    def _keep(self, task: dict) -> None:
        self.kept.append(str(task.get("name", "?")))
        self.registered.discard(str(task.get("register", "")))

    def _drop(self, task: dict) -> None:
        self.removed.append(str(task.get("name", "?")))
        if task.get("register"):
            self.registered.add(str(task["register"]))
        if _module(task) == "set_fact":
            args = next(v for k, v in task.items() if _module({k: v}) == "set_fact") or {}
            self.facts |= {k for k in args if k != "cacheable"} if isinstance(args, dict) else set()

    def file(self, tasks: list) -> list:
        self.registered = set()
        return self.tasks(tasks)

    def tasks(self, tasks: list) -> list:
        out = []
        for task in tasks:
            if not isinstance(task, dict):
                out.append(task)
                continue
            if "block" in task:
                head = {k: v for k, v in task.items() if k not in ("block", "rescue", "always")}
                if self._reads_tainted(head):
                    self._drop(head)
                    continue
                inner = {k: self.tasks(task.get(k) or []) for k in ("block", "rescue", "always") if k in task}
                if inner.get("block"):
                    out.append({**task, **inner})
                continue
            module = _module(task)
            local_read = task.get("delegate_to") == "localhost" and (module in LOCAL_READ or (
                module == "command" and _command(task).startswith(LOCAL_READ_COMMAND)))
            if (module in KEEP or local_read) and not self._reads_tainted(task):
                self._keep(task)
                out.append(task)
            else:
                self._drop(task)
        return out


def host_free_tree(release: str, dest: Path) -> Filter:
    """Copy the release's ansible/ tree to ``dest`` with every task file filtered (see the module doc)."""
    src = kf.share(release) / "ansible"
    shutil.copytree(src, dest)
    files = sorted(p for p in dest.glob("roles/*/tasks/*.yml"))
    data = {p: yaml.safe_load(p.read_text()) or [] for p in files}
    f = Filter()
    while True:
        before = set(f.facts)
        f = Filter(facts=before)
        out = {p: f.file(tasks) if isinstance(tasks, list) else tasks for p, tasks in data.items()}
        if f.facts == before:
            break
    for p, tasks in out.items():
        p.write_text(yaml.safe_dump(tasks, sort_keys=False, width=1000))
    return f


def _interface_facts(name: str, addr: str, cidr: str) -> dict:
    net = ipaddress.ip_network(cidr)
    return {"device": name, "active": True, "type": "ether",
            "ipv4": {"address": addr, "netmask": str(net.netmask), "network": str(net.network_address),
                     "prefix": str(net.prefixlen)}}


def host_facts(inv: Inventory, name: str) -> dict:
    """Facts of one host as the setup module reports them, from the inventory's networks and addresses."""
    node = inv.node(name)
    facts = {"hostname": name, "nodename": name, "fqdn": name, "service_mgr": "systemd", "architecture": "x86_64",
             "system": "Linux", "python": {"version": {"major": 3, "minor": 12}},
             "memtotal_mb": int((node.expect.ram_gib if node.expect and node.expect.ram_gib else 256) * 1024),
             "processor_vcpus": node.expect.cores if node.expect and node.expect.cores else 64, **HOST_OS}
    interfaces = []
    for net_name, net in inv.networks.items():
        addr = node.addresses.get(net_name)
        if net.interface and addr:
            key = net.interface.replace("-", "_")
            facts[key] = _interface_facts(net.interface, addr, net.cidr)
            interfaces.append(net.interface)
            if net_name == "api":
                facts["default_ipv4"] = {**facts[key]["ipv4"], "interface": net.interface}
    facts["interfaces"] = interfaces
    facts["all_ipv4_addresses"] = [a for a in node.addresses.values()]
    return facts


def _cache_entry(path: Path, facts: dict) -> None:
    # ansible-core 2.19 and 2.20's jsonfile cache: file s1_<host>, the facts as a JSON string payload.
    payload = json.dumps({f"ansible_{k}": v for k, v in facts.items()})
    path.write_text(json.dumps({"__payload__": payload}))


def write_fact_cache(inv: Inventory, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for node in inv.nodes:
        _cache_entry(cache / f"s1_{node.name}", host_facts(inv, node.name))
    local = host_facts(inv, inv.nodes[0].name) | {"hostname": "localhost", "nodename": "localhost"}
    _cache_entry(cache / "s1_localhost", local)


@dataclass
class Run:
    failures: list[dict]
    held: list[str]  # tasks that ran (not skipped) and did not fail, by name
    returncode: int
    output: str


def run(release: str, out_dir: Path, inv: Inventory, tmp: Path, extra: dict | None = None,
        limit: str | None = None) -> Run:
    """``site.yml`` with kolla_action=precheck over the generated files in ``out_dir``; the failed tasks.

    ``limit`` (an Ansible host pattern) narrows the run, as ``kolla-ansible prechecks --limit`` does.
    """
    tree = tmp / "ansible"
    if not tree.exists():
        host_free_tree(release, tree)
    cache = tmp / "facts"
    write_fact_cache(inv, cache)
    bin_dir = kt.venv(release)
    env = kt.env(release, tmp)
    env.update(ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(cache),
               ANSIBLE_CACHE_PLUGIN_TIMEOUT="0", ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_GATHERING="smart",
               ANSIBLE_HOST_KEY_CHECKING="False")
    cmd = [str(bin_dir / "ansible-playbook"), "-i", str(out_dir / "multinode"),
           "-e", f"@{out_dir / 'globals.yml'}", "-e", f"@{out_dir / 'passwords.yml'}",
           "-e", "kolla_action=precheck", "-e", f"CONFIG_DIR={out_dir}",
           "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={bin_dir / 'python'}",
           "-e", "ansible_become=false"]
    for k, v in (extra or {}).items():
        cmd += ["-e", f"{k}={v}"]
    if limit:
        cmd += ["--limit", limit]
    cmd.append(str(tree / "site.yml"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=tmp)
    try:
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise AssertionError(f"ansible-playbook gave no JSON report (rc {proc.returncode}): "
                             f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}") from None
    failures, ok = [], []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            tname = task["task"]["name"]
            for host, res in task.get("hosts", {}).items():
                # The facts must come from the cache: a real setup run would describe this machine.
                assert not (tname == "Gather facts" and not res.get("skipped")), \
                    f"facts of {host} were gathered, not read from the cache"
                if res.get("failed") or res.get("unreachable"):
                    msg = res.get("msg") or res.get("stderr") or ""
                    if res.get("results"):  # a loop: each failed item's own message
                        msg = "; ".join(str(r.get("msg", "")) for r in res["results"] if r.get("failed")) or msg
                    failures.append({"task": tname, "host": host, "msg": str(msg)[:500]})
                elif not res.get("skipped"):
                    ok.append(tname)
    return Run(failures, ok, proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:])
