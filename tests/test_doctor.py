"""`viewbox doctor` agrees with reality: each probe is checked against an
independent way of asking the kernel (util-linux unshare, ctypes syscalls,
/proc), as root and as an unprivileged user."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import pathlib
import re
import subprocess

import pytest

from unpriv import NOBODY, run_unprivileged
from viewbox import doctor
from viewbox.policy import SHIPPED, Policy, load_policy

LAYER_ORDER = ["userns", "mountns", "pidns", "netns", "ipcns", "utsns", "cgroupns", "timens",
               "seccomp", "seccomp-notify", "seccomp-addfd", "landlock", "cgroups", "pidfd", "time-trace",
               "private-net"]

# layer -> util-linux unshare option creating that namespace
UNSHARE_OPTION = {"mountns": "--mount", "pidns": "--pid", "netns": "--net", "ipcns": "--ipc",
                  "utsns": "--uts", "cgroupns": "--cgroup", "timens": "--time"}

AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

PROBE_AS_JSON = ("import json; from viewbox import doctor; "
                 "print(json.dumps(doctor.probe().to_dict()))")


def _kernel_landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return abi if abi >= 0 else 0


def _unshare_works(options: list[str], as_nobody: bool) -> bool:
    cmd = [*(AS_NOBODY if as_nobody else []), "unshare", *options, "true"]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def root_probe() -> doctor.Probe:
    assert os.geteuid() == 0, "these tests compare root's view with nobody's"
    return doctor.probe()


@pytest.fixture(scope="module")
def nobody_probe() -> dict:
    done = run_unprivileged(["-c", PROBE_AS_JSON])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_probe_is_cached(root_probe: doctor.Probe) -> None:
    assert doctor.probe() is root_probe


def test_layers_in_order(root_probe: doctor.Probe) -> None:
    assert [layer.name for layer in root_probe.layers] == LAYER_ORDER
    assert all(layer.detail and layer.consequence for layer in root_probe.layers)


def test_root_with_identity_map_is_privileged(root_probe: doctor.Probe) -> None:
    with open("/proc/self/uid_map") as f:
        full_map = f.read().split() == ["0", "0", "4294967295"]
    assert root_probe.privileged == full_map
    assert root_probe.user == "root (uid 0)"


def test_landlock_abi_matches_kernel(root_probe: doctor.Probe) -> None:
    abi = _kernel_landlock_abi()
    assert root_probe.landlock_abi == abi
    assert root_probe.layer("landlock").available == (abi > 0)
    if abi:
        assert root_probe.layer("landlock").detail.startswith(f"ABI {abi}: ")


def test_userns_matches_unshare(root_probe: doctor.Probe) -> None:
    assert root_probe.userns == _unshare_works(["--user"], as_nobody=False)


@pytest.mark.parametrize("name", UNSHARE_OPTION)
def test_namespace_matches_unshare(root_probe: doctor.Probe, name: str) -> None:
    # Privileged root makes namespaces without a user namespace, as unshare does here.
    assert root_probe.privileged
    assert root_probe.layer(name).available == _unshare_works([UNSHARE_OPTION[name]],
                                                              as_nobody=False)


def test_pidfd_matches_os(root_probe: doctor.Probe) -> None:
    try:
        os.close(os.pidfd_open(os.getpid()))
        works = True
    except OSError:
        works = False
    assert root_probe.layer("pidfd").available == works


def test_seccomp_matches_proc_and_kernel(root_probe: doctor.Probe) -> None:
    with open("/proc/self/status") as f:
        status = f.read()
    major, minor = os.uname().release.split(".")[:2]
    release = (int(major), int(minor))
    assert root_probe.layer("seccomp").available == ("\nSeccomp:" in status)
    # A process under no filter yet, on Linux >= 5.0, can always get a listener.
    if "Seccomp_filters:\t0" in status and release >= (5, 0):
        assert root_probe.seccomp_notify
    assert root_probe.layer("seccomp-addfd").available == (
        root_probe.seccomp_notify and release >= (5, 14))


def test_cgroup_matches_filesystem(root_probe: doctor.Probe) -> None:
    info = root_probe.cgroup
    expected = {(True, True): "hybrid", (True, False): "v2", (False, True): "v1",
                (False, False): "none"}[(info.v2_mount is not None, bool(info.v1_mounts))]
    assert info.version == expected
    for controller, path in info.v1_mounts.items():
        assert os.path.ismount(path)
        assert os.path.exists(os.path.join(path, "cgroup.procs"))
    if info.v2_mount is not None:
        assert os.path.ismount(info.v2_mount)
        with open("/proc/self/cgroup") as f:
            own = next(line[3:].strip() for line in f if line.startswith("0::"))
        assert info.v2_cgroup == os.path.normpath(info.v2_mount + own)
        with open(os.path.join(info.v2_cgroup, "cgroup.controllers")) as f:
            assert info.v2_controllers == tuple(f.read().split())


def test_to_dict_is_json(root_probe: doctor.Probe) -> None:
    data = json.loads(json.dumps(root_probe.to_dict()))
    assert [layer["name"] for layer in data["layers"]] == LAYER_ORDER
    assert data["landlock_abi"] == root_probe.landlock_abi
    assert data["cgroup"]["version"] == root_probe.cgroup.version


def test_render_has_a_line_per_layer(root_probe: doctor.Probe) -> None:
    text = doctor.render(root_probe)
    for layer in root_probe.layers:
        status = "ok" if layer.available else "MISSING"
        assert re.search(rf"^  {status} +{re.escape(layer.name)} +{re.escape(layer.detail)}$",
                         text, re.M), layer.name
    assert "\nWhat this means\n" in text


def test_unprivileged_probe(nobody_probe: dict, root_probe: doctor.Probe) -> None:
    assert nobody_probe["user"] == f"nobody (uid {NOBODY})"
    assert nobody_probe["privileged"] is False
    assert nobody_probe["userns"] is True  # this machine allows unprivileged userns
    assert _unshare_works(["--user"], as_nobody=True)
    assert nobody_probe["landlock_abi"] == root_probe.landlock_abi


def test_unprivileged_namespaces_match_unshare(nobody_probe: dict) -> None:
    layers = {layer["name"]: layer for layer in nobody_probe["layers"]}
    for name, option in UNSHARE_OPTION.items():
        works = _unshare_works(["--user", option], as_nobody=True)
        assert layers[name]["available"] == works, name
        assert layers[name]["detail"].startswith("clone(CLONE_NEWUSER|")


def test_unprivileged_cgroup_writability_matches_mkdir(nobody_probe: dict) -> None:
    cgroup = nobody_probe["cgroup"]
    if cgroup["v2_cgroup"] is not None:
        assert cgroup["v2_writable"] == _nobody_can_mkdir(cgroup["v2_cgroup"])
    for controller, path in cgroup["v1_mounts"].items():
        assert (controller in cgroup["v1_writable"]) == _nobody_can_mkdir(path), controller


def _nobody_can_mkdir(cgroup_dir: str) -> bool:
    """Whether nobody can really create a child cgroup in `cgroup_dir` (removed again)."""
    child = os.path.join(cgroup_dir, f"viewbox-doctor-test-{os.getpid()}")
    made = run_unprivileged(["-c", f"import os; os.mkdir({child!r})"])
    if made.returncode == 0:
        os.rmdir(child)
    return made.returncode == 0


def test_unprivileged_render_says_policies_can_run() -> None:
    done = run_unprivileged(
        ["-c", "from viewbox import doctor; print(doctor.render(doctor.probe()))"])
    assert done.returncode == 0, done.stderr
    meaning = " ".join(done.stdout.split())
    assert "Running unprivileged" in meaning
    assert f"Shipped policies that run here: {', '.join(SHIPPED)}." in meaning


def test_missing_userns_explains_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine where every clone() is refused, as for a user under a userns ban.
    monkeypatch.setattr(doctor, "probe_clone", lambda flags, with_userns: -errno.EPERM)
    monkeypatch.setattr(doctor, "_is_privileged", lambda: False)
    monkeypatch.setattr(doctor, "_read_sysctl", lambda path: {
        "/proc/sys/user/max_user_namespaces": "0"}.get(path))
    probe = doctor.probe.__wrapped__()
    userns = probe.layer("userns")
    assert not userns.available and not probe.userns
    assert "sysctl -w user.max_user_namespaces=" in userns.detail
    assert not probe.layer("mountns").available
    meaning = " ".join(doctor.render(probe).split())  # unwrap the paragraph
    assert ("No policy can run here: userns, mountns, pidns, ipcns, utsns, cgroupns missing"
            in meaning)


def _policy(tmp_path: pathlib.Path, toml: str) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(f'[viewbox]\nversion = 1\nextends = ["default"]\n{toml}')
    return load_policy(path)


def test_missing_landlock_blocks_unless_accepted(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: pathlib.Path) -> None:
    monkeypatch.setattr(doctor, "probe_landlock_abi", lambda: -errno.EOPNOTSUPP)
    probe = doctor.probe.__wrapped__()
    landlock = probe.layer("landlock")
    assert probe.landlock_abi == 0 and not landlock.available
    assert "lsm=" in landlock.detail
    assert landlock.consequence == (
        'no Landlock: policies run only with accept_degraded = ["landlock"]')
    assert doctor.blocking_layers(probe, load_policy("default")) == [landlock]
    assert doctor.blocking_layers(probe, _policy(tmp_path, 'accept_degraded = ["landlock"]')) == []
    meaning = " ".join(doctor.render(probe).split())
    for name in SHIPPED:
        assert f"Policy {name} refuses to start: landlock missing." in meaning


def test_missing_netns_blocks_only_isolated_networks(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: pathlib.Path) -> None:
    real_clone = doctor.probe_clone
    monkeypatch.setattr(doctor, "probe_clone", lambda flags, with_userns: (
        -errno.EPERM if flags & doctor.CLONE_NEWNET else real_clone(flags, with_userns)))
    probe = doctor.probe.__wrapped__()
    assert [layer.name for layer in probe.layers if not layer.available] == ["netns"]
    assert doctor.blocking_layers(probe, load_policy("default")) == [probe.layer("netns")]
    assert doctor.blocking_layers(probe, _policy(tmp_path, '[net]\nmode = "host"')) == []


def test_one_missing_namespace_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel without time namespaces: the all-at-once clone fails, each alone says which.
    real_clone = doctor.probe_clone
    monkeypatch.setattr(doctor, "probe_clone", lambda flags, with_userns: (
        -errno.EINVAL if flags & doctor.CLONE_NEWTIME else real_clone(flags, with_userns)))
    probe = doctor.probe.__wrapped__()
    missing = [layer for layer in probe.layers if not layer.available]
    assert [layer.name for layer in missing] == ["timens"]
    assert missing[0].detail == "clone(CLONE_NEWTIME): Invalid argument"
    meaning = " ".join(doctor.render(probe).split())
    assert f"Shipped policies that run here: {', '.join(SHIPPED)}." in meaning
