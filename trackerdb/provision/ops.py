"""The provisioning operation: read facts, change only what differs, report every step.

Order matters and is the point of this module:
1. preflight, read-only: secret, host facts, the data volume (identity, size, serial, filesystem),
   package versions. Every bad input fails here, before the host is changed.
2. the data volume is formatted (only when blank), put in fstab by UUID and mounted *before* any
   PostgreSQL package is installed, and the packages are told not to create a cluster;
3. the cluster is created by us, only after ``findmnt`` shows the volume at the mount point;
4. configuration, service state, versions read back from the running server, the role.
"""

from __future__ import annotations

import difflib
import posixpath
import shlex
from dataclasses import dataclass, field

from .. import compat, tls
from ..errors import HostError, PreflightError, VerifyError
from ..session import connect, target_cluster
from ..safe_paths import ensure_dir
from ..secrets import Secret, fetch_secret, mask
from ..steps import Outcome, Step
from . import apt, facts, pgconf, roles, volume
from ..settings import Settings


@dataclass
class Facts:
    os: dict = field(default_factory=dict)
    mem_bytes: int = 0
    cores: int = 1
    addresses: set = field(default_factory=set)
    device: str = ""
    majmin: str = ""
    probe: volume.Probe = field(default_factory=volume.Probe)
    mounted_here: bool = False
    fstab: str = ""
    volume_action: str = "use"
    chosen: dict = field(default_factory=dict)
    specs: list = field(default_factory=list)


def provision(settings: Settings, dry_run: bool = False, progress=None, host=None) -> Outcome:
    """Bring the target to the runbook's target state. ``host`` is for tests (a Remote-like object)."""
    say = progress or (lambda msg: None)
    out = Outcome(f"provision {settings.target.name} ({settings.target.address})", dry_run=dry_run)
    tls.require_configured(settings)  # before anything is fetched or touched
    # the configured pin: a known-broken engine is refused before the host is even reached
    compat.check(f"{settings.target.name} (postgresVersion)", settings.postgres_version, settings.timescaledb_version)
    say("fetching the tracker role's password from Secrets Manager")
    secret = fetch_secret(settings, settings.app_secret_name)
    server_tls = None
    if settings.tls_secret_name:
        say("fetching PostgreSQL's certificate and key from Secrets Manager")
        bundle = fetch_secret(settings, settings.tls_secret_name).reveal()
        cert, key = tls.parse_bundle(settings.tls_secret_name, bundle)
        server_tls = (cert, Secret(settings.tls_secret_name, key))
    remote = host or connect(settings.target, [secret] + ([server_tls[1]] if server_tls else []))
    try:
        Provisioner(settings, remote, out, dry_run, say, secret.reveal(), server_tls).run()
    finally:
        if host is None:
            remote.close()
    return out


class Provisioner:
    def __init__(self, settings: Settings, host, out: Outcome, dry_run: bool, say, password: str,
                 server_tls: tuple[str, Secret] | None = None):
        self.s = settings
        self.host = host
        self.out = out
        self.dry = dry_run
        self.say = say
        self._password = password
        self._tls = server_tls  # (certificate PEM, private key) from the operator's secret
        self.f = Facts()

    # ---- helpers ---------------------------------------------------------------------------
    def sh(self, cmd, **kw):
        return self.host.run(cmd, sudo=True, **kw)

    def pg(self, sql: str, check: bool = True):
        return target_cluster(self.host, self.s).run(sql, check=check)

    def step(self, name: str, changed: bool, detail: str, commands=(), apply=None) -> Step:
        shown = [mask(c if isinstance(c, str) else shlex.join(c), self._password) for c in commands]
        st = Step(name, changed, detail, shown)
        if changed and not self.dry and apply is not None:
            self.say(f"{name}: {detail}")
            apply()
        self.out.add(st)
        return st

    def pg_user(self) -> str | None:
        """``postgres`` once it exists: postgres owns /etc/postgresql/<major>/main, so what is in there is
        read and written as postgres, never as root (a link postgres planted would otherwise be followed
        by root: its target shown in the plan's diff or copied into postgresql.conf). Before the packages
        make the user, nobody but root can have put anything there."""
        return "postgres" if self.sh(["getent", "passwd", "postgres"], check=False).ok else None

    def file_step(self, name: str, path: str, content: str, mode: str = "0644", owner: str = "root",
                  group: str | None = None,
                  user: str | None = None) -> bool:
        """``path`` holds ``content``; with ``user`` (its owner) read and written as that user, never as root."""
        current = self.host.read_file(path, user=user)
        if current == content:
            self.step(name, False, f"{path} up to date")
            return False
        diff = "".join(difflib.unified_diff((current or "").splitlines(True), content.splitlines(True),
                                            f"{path} (host)", f"{path} (wanted)"))

        def write():
            if current is None:
                self.host.run(["mkdir", "-p", posixpath.dirname(path)], sudo=user is None, user=user)
            self.host.write_file(path, content, mode=mode, owner=owner, group=group, user=user)

        self.step(name, True, f"write {path}" + (" (new)" if current is None else ""), [f"write {path}\n{diff}"], write)
        return True

    # ---- the operation ---------------------------------------------------------------------
    def run(self) -> None:
        self.read_host()
        self.check_volume()
        self.resolve_packages(sources_pending=self.package_sources() and self.dry)
        self.prepare_volume()
        self.install_packages()
        self.cluster()
        changed_keys, hba_changed = self.configure()
        self.service(changed_keys, hba_changed)
        if self.dry and not self.cluster_exists():
            self.step("versions", False, "read back after install (dry run: not yet installed)")
            self.step("role", True, f"create role {self.s.owner_role} with its password from {self.s.app_secret_name}")
            return
        self.verify_versions()
        self.role()
        self.verify_placement()

    def read_host(self) -> None:
        self.say("reading host facts")
        f = self.f
        f.os = facts.parse_os_release(self.sh(facts.OS_RELEASE).stdout)
        f.mem_bytes = facts.parse_meminfo(self.sh(facts.MEMINFO).stdout)
        f.cores = int(self.sh(facts.NPROC).stdout.strip() or 1)
        r = self.sh(facts.ADDRESSES, check=False)
        f.addresses = facts.parse_addresses(r.stdout) if r.ok else set()
        ip = self.private_ip
        if f.addresses and ip not in f.addresses:
            raise PreflightError(f"{self.s.target.name} has no address {ip} (it has {', '.join(sorted(f.addresses))})",
                                 hint="the stack's private_ip and the host disagree: is this the right host?")

    @property
    def private_ip(self) -> str:
        return str(self.s.outputs.get("private_ip") or self.s.target.address)

    def check_volume(self) -> None:
        s, f = self.s, self.f
        self.say(f"looking for data volume {s.data_volume_id}")
        r = self.sh(facts.resolve_device(s.data_volume_by_id), check=False)
        if not r.ok or not r.stdout.strip():
            raise PreflightError(f"data volume {s.data_volume_id} not found on {s.target.name}: no "
                                 f"{s.data_volume_by_id}",
                                 hint="check data_volume_id in the stack outputs and that the volume is attached "
                                      "to this instance")
        f.device = r.stdout.strip()
        volume.check_size(int(self.sh(facts.size_bytes(f.device)).stdout.strip()), s.data_volume_size_gb, f.device)
        sr = self.sh(facts.serial(f.device), check=False)
        volume.check_serial(volume.parse_lsblk_serial(sr.stdout) if sr.ok else "", s.data_volume_id, f.device)
        f.majmin = self.sh(facts.majmin(f.device), check=False).stdout.strip()
        b = self.sh(facts.blkid(f.device), check=False)
        if b.exit_code not in (0, 2):
            raise HostError(f"blkid -p {f.device} failed: {b.stderr.strip()[:200]}", hint="is the device readable?")
        f.probe = volume.parse_blkid(b.stdout) if b.ok else volume.Probe()
        mnt = volume.parse_findmnt(self.sh(facts.findmnt(s.data_mount), check=False).stdout)
        f.mounted_here = volume.mount_is_device(mnt, f.device, f.majmin)
        if mnt and not f.mounted_here:
            raise PreflightError(f"{s.data_mount} is already a mount of {mnt.get('source')}, not the data "
                                 f"volume {f.device}",
                                 hint="unmount it (and fix /etc/fstab) by hand after checking what it is")
        f.fstab = self.host.read_file("/etc/fstab") or ""
        in_fstab = bool(f.probe.uuid) and f"UUID={f.probe.uuid} " in f.fstab
        listing = None
        if f.probe.fstype and f.probe.label != volume.LABEL and not f.mounted_here and not in_fstab:
            peek = self.sh(volume.peek_command(f.probe.fstype, f.device), check=False)
            listing = peek.stdout.split() if peek.ok else ["(unreadable)"]
        f.volume_action = volume.decide(f.probe, s.fs_type, f.device, mounted_here=f.mounted_here, in_fstab=in_fstab,
                                        listing=listing)
        if not f.mounted_here:
            existing = self.sh(facts.dir_listing(s.data_mount)).stdout.split()
            if existing:
                raise PreflightError(f"{s.data_mount} is not mounted but holds files ({', '.join(existing[:5])})",
                                     hint="something wrote to the root disk there (a package's cluster?): move it "
                                          "away by hand first")
        # fstab conflicts are errors too: find them before changing anything
        if f.probe.uuid:
            volume.fstab_update(f.fstab, f.probe.uuid, s.data_mount, s.fs_type)

    # ---- packages --------------------------------------------------------------------------
    def package_sources(self) -> bool:
        """Returns whether the apt sources changed (or would, in a dry run)."""
        if self.s.package_source != "pgdg":
            self.step("apt sources", False, "the host's own apt sources (package_source=debian)")
            return False
        codename = self.f.os.get("VERSION_CODENAME", "bookworm")
        installed = apt.parse_dpkg_status(self.sh(apt.dpkg_query_command(["ca-certificates", "curl", "gnupg"])).stdout)
        need = [p for p in ("ca-certificates", "curl", "gnupg") if p not in installed]
        self.step("apt prerequisites", bool(need), f"install {' '.join(need)}" if need else "present",
                  [f"{apt.APT_ENV} apt-get install -y -q {' '.join(need)}"],
                  lambda: self.sh(f"{apt.APT_ENV} apt-get install -y -q {shlex.join(need)}", timeout=600))
        changed = False
        for repo in apt.repos("pgdg"):
            has_key = self.host.exists(repo.keyring)
            self.step(f"keyring {repo.name}", not has_key, repo.keyring, [apt.key_install_command(repo)],
                      lambda repo=repo: self.sh(apt.key_install_command(repo), timeout=120))
            listed = self.file_step(f"apt source {repo.name}", repo.list_file, repo.source_line(codename))
            changed |= listed or not has_key
        if changed and not self.dry:
            self.sh(apt.update_command(), timeout=600)
        return changed

    def resolve_packages(self, sources_pending: bool = False) -> None:
        f = self.f
        f.specs = apt.package_specs(self.s, f.os.get("VERSION_ID", "12"))
        names = [p.name for p in f.specs]
        drift = apt.minor_drift(f.specs, apt.parse_dpkg_status(self.sh(apt.dpkg_query_command(names)).stdout))
        if drift:  # before any change: never an upgrade or downgrade of a running PostgreSQL by the way
            raise PreflightError("PostgreSQL on the host is not the source's version: " + "; ".join(drift),
                                 hint="provisioning never changes a host's PostgreSQL minor; upgrade or downgrade it "
                                      "by hand (or set postgresVersion) after checking what runs there")
        if sources_pending:
            # dry run on a host without the repositories yet: apt cannot know their versions until they are added
            f.chosen = {p.name: f"{p.want}{p.suffix}*" if p.want else "candidate" for p in f.specs}
            self.step("package versions", False, apt.chosen_text(f.specs, f.chosen, {}) + " from " + ", ".join(
                r.url for r in apt.repos(self.s.package_source)) + f" (else {apt.PGDG_ARCHIVE.url} for PostgreSQL's); "
                "checked against the repositories once they are added (dry run)")
            return
        r = self.sh(apt.madison_command(names), check=False)
        available = apt.parse_madison(r.stdout)
        if any(n not in available for n in names):
            # apt's lists may be stale or absent on a fresh host; refreshing them changes no configuration
            self.say("refreshing apt lists")
            self.sh(apt.update_command(), timeout=600)
            r = self.sh(apt.madison_command(names), check=False)
            available = apt.parse_madison(r.stdout)
        old = apt.archive_wanted(f.specs, available, self.s.package_source)
        if old:
            # PGDG no longer carries the source's minor: its archive repository does (same signing key)
            codename = f.os.get("VERSION_CODENAME", "bookworm")
            repo = apt.PGDG_ARCHIVE
            self.say(f"{', '.join(old)}: not on {apt.PGDG.url} at {self.s.postgres_version}; adding {repo.url}")
            if self.file_step(f"apt source {repo.name}", repo.list_file, repo.source_line(codename)) and self.dry:
                f.chosen = {p.name: f"{p.want}{p.suffix}*" if p.want else "candidate" for p in f.specs}
                self.step("package versions", False, apt.chosen_text(f.specs, f.chosen, {}) + f" from {repo.url} "
                          f"{repo.suite.format(codename=codename)} (dry run: checked once it is added)")
                return
            self.sh(apt.update_command(), timeout=600)
            r = self.sh(apt.madison_command(names), check=False)
            available = apt.parse_madison(r.stdout)
        # what apt would install (a major-only pin takes the newest minor): a known-broken engine is refused
        # before the install, and before a missing TimescaleDB build for it is reported
        server = apt.server_candidate(f.specs, available, self.s.postgres_major)
        if server:
            compat.check(f"{self.s.target.name} (apt candidate postgresql-{self.s.postgres_major}={server})",
                         apt.upstream(server)[0], self.s.timescaledb_version)
        f.chosen = apt.resolve(f.specs, available, self.s.package_source)
        self.step("package versions", False, apt.chosen_text(f.specs, f.chosen, apt.madison_origins(r.stdout)))

    def prepare_volume(self) -> None:
        s, f = self.s, self.f
        dev = f.device
        if s.fs_type == "xfs" and not self.sh("command -v mkfs.xfs", check=False).ok:
            cmd = f"{apt.APT_ENV} apt-get install -y -q xfsprogs"
            self.step("xfsprogs", True, "install xfsprogs", [cmd], lambda: self.sh(cmd, timeout=600))
        if f.volume_action == "mkfs":
            self.step("format data volume", True, f"{dev} has no filesystem: mkfs {s.fs_type} label {volume.LABEL}",
                      [volume.mkfs_command(s.fs_type, dev)],
                      lambda: self.sh(volume.mkfs_command(s.fs_type, dev), timeout=900))
        elif f.volume_action == "adopt":
            self.step("label data volume", True, f"empty {s.fs_type} on {dev}: label it {volume.LABEL}",
                      [volume.label_command(s.fs_type, dev)], lambda: self.sh(volume.label_command(s.fs_type, dev)))
        else:
            self.step("format data volume", False, f"{dev} already has our {f.probe.fstype} filesystem "
                                                   "(never reformatted)")
        if f.volume_action != "use" and not self.dry:
            f.probe = volume.parse_blkid(self.sh(facts.blkid(dev)).stdout)
        uuid = f.probe.uuid or "<uuid after mkfs>"
        self.file_step("fstab", "/etc/fstab", volume.fstab_update(f.fstab, uuid, s.data_mount, s.fs_type))
        mount_cmd = f"mkdir -p {shlex.quote(s.data_mount)} && mount {shlex.quote(s.data_mount)}"
        self.step("mount data volume", not f.mounted_here,
                  f"{dev} at {s.data_mount}" + ("" if not f.mounted_here else " (mounted)"), [mount_cmd],
                  lambda: self.sh(mount_cmd))
        if not self.dry:
            self.require_mount()

    def require_mount(self) -> None:
        mnt = volume.parse_findmnt(self.sh(facts.findmnt(self.s.data_mount), check=False).stdout)
        if not volume.mount_is_device(mnt, self.f.device, self.f.majmin):
            raise HostError(f"the data volume is not mounted at {self.s.data_mount} (findmnt: {mnt})",
                            hint="refusing to put a cluster on the root disk: check /etc/fstab and `mount -a`")

    def install_packages(self) -> None:
        s, f = self.s, self.f
        current = self.host.read_file(pgconf.CREATECLUSTER_CONF)
        self.file_step("createcluster.conf", pgconf.CREATECLUSTER_CONF, pgconf.createcluster_text(current))
        self.file_step("apt pins", apt.PIN_FILE, apt.pin_text(f.specs, f.chosen))
        names = [p.name for p in f.specs]
        installed = apt.parse_dpkg_status(self.sh(apt.dpkg_query_command(names)).stdout)
        todo = [p.name for p in f.specs
                if p.name not in installed or (p.pinned and installed[p.name] != f.chosen[p.name])]
        cmd = apt.install_command(f.specs, f.chosen)
        self.step("packages", bool(todo), f"install {' '.join(todo)}" if todo else "installed at the pinned versions",
                  [cmd], lambda: self.sh(cmd, timeout=1800))
        pinned = [p.name for p in f.specs if p.pinned]
        held = set(self.sh(["apt-mark", "showhold"]).stdout.split())
        missing = [n for n in pinned if n not in held]
        self.step("apt-mark hold", bool(missing), " ".join(missing) if missing else "held", [apt.hold_command(missing)],
                  lambda: self.sh(apt.hold_command(missing)))
        if self.dry and todo:
            return
        st = self.sh(["stat", "-c", "%U:%G", s.data_mount]).stdout.strip()
        cmd2 = ["chown", "postgres:postgres", s.data_mount]
        self.step("data mount owner", st != "postgres:postgres", f"{s.data_mount} owned by {st}", [cmd2],
                  lambda: self.sh(cmd2))

    # ---- cluster ---------------------------------------------------------------------------
    def clusters(self) -> list[dict]:
        r = self.sh("command -v pg_lsclusters >/dev/null && pg_lsclusters -h || true")
        return [c for c in facts.parse_lsclusters(r.stdout)
                if c["version"] == str(self.s.postgres_major) and c["cluster"] == "main"]

    def cluster_exists(self) -> bool:
        return bool(self.clusters())

    def cluster(self) -> None:
        s = self.s
        found = self.clusters()
        if found:
            if found[0]["datadir"].rstrip("/") != s.cluster_dir:
                raise HostError(f"cluster {s.postgres_major}/main exists at {found[0]['datadir']}, not {s.cluster_dir}",
                                hint="it is not on the data volume: inspect and move it by hand (never dropped "
                                     "automatically)")
            self.step("cluster", False, f"{s.postgres_major}/main at {s.cluster_dir}")
            return
        cmd = pgconf.createcluster_command(s)

        def create():
            self.require_mount()  # the guard the runbook is about: never a cluster on the root disk
            self.sh(cmd, timeout=600)

        self.step("cluster", True, f"create {s.postgres_major}/main at {s.cluster_dir} (after checking the mount)",
                  [cmd], create)

    def configure(self) -> tuple[set, bool]:
        s, f = self.s, self.f
        t = pgconf.tune(f.mem_bytes, f.cores, s.data_volume_size_gb)
        want = pgconf.dropin_text(s, t, self.private_ip)
        path = pgconf.dropin_path(s)
        pg = self.pg_user()
        old = self.host.read_file(path, user=pg)
        changed_keys = _changed_keys(old, want)
        main_conf = f"{pgconf.conf_dir(s)}/postgresql.conf"
        current_main = self.host.read_file(main_conf, user=pg)
        if current_main is not None and not pgconf.includes_conf_d(current_main):
            # a cluster made without the packaged createcluster.conf lacks the include: add only that line
            self.file_step("conf.d include", main_conf, current_main + "include_dir = 'conf.d'\n", owner="postgres",
                           user=pg)
            changed_keys = _changed_keys(None, want)
        tls_changed = self.server_certificate()
        self.file_step("conf.d drop-in", path, want, owner="postgres", user=pg)
        hba_changed = self.file_step("pg_hba", pgconf.hba_path(s), pgconf.hba_text(s), mode="0640", owner="postgres",
                                     user=pg)
        # a new certificate at an unchanged path is read on reload (ssl settings are sighup since PG 10)
        return changed_keys, hba_changed or tls_changed

    def server_certificate(self) -> bool:
        """The operator's certificate and key, written before the drop-in points PostgreSQL at them.

        The key is owner-only in a postgres-only directory; it is compared on the host and never
        shown (no diff, no content in the plan or any message).
        """
        if self._tls is None:
            self.step("tls certificate", False, "lab: Debian's snakeoil certificate (no tls_secret_name)")
            return False
        s = self.s
        cert, key = self._tls
        crt_path, key_path = tls.server_files(s)
        d = tls.server_dir(s)
        pg = self.pg_user()  # postgres's directory: read and written as postgres (see pg_user)
        have_cert, have_key = self.host.read_file(crt_path, user=pg), self.host.read_file(key_path, user=pg)
        mode = self.sh(["stat", "-c", "%U:%G %a", d, key_path], check=False).stdout.split("\n")
        modes_ok = mode[:2] == ["postgres:postgres 700", "postgres:postgres 600"]
        if have_cert == cert and have_key == key.reveal() and modes_ok:
            self.step("tls certificate", False, f"{crt_path} and its key match {s.tls_secret_name}")
            return False

        def write():
            ensure_dir(self.host, d, "0700", "postgres")  # root, refusing a link postgres placed there
            self.host.write_file(key_path, key.reveal(), mode="0600", owner="postgres", group="postgres", user=pg)
            self.host.write_file(crt_path, cert, mode="0644", owner="postgres", group="postgres", user=pg)

        self.step("tls certificate", True,
                  f"install {crt_path} and {key_path} (mode 0600) from {s.tls_secret_name}",
                  [f"install -d -m 0700 {d}", f"write {key_path} (0600, content not shown)", f"write {crt_path}"],
                  write)
        return True

    def service(self, changed_keys: set, hba_changed: bool) -> None:
        s = self.s
        found = self.clusters()
        online = bool(found) and found[0]["status"] == "online"
        if not online:
            cmd = pgconf.ctl_command(s, "start")
            self.step("server", True, "start", [cmd], lambda: self.sh(cmd, timeout=300))
            return
        restart_keys = set()
        if changed_keys:
            rows = self.pg("SELECT name FROM pg_settings WHERE context = 'postmaster';\n").stdout.split()
            restart_keys = changed_keys & set(rows)
        if restart_keys:
            cmd = pgconf.ctl_command(s, "restart")
            self.step("server", True, f"restart for {', '.join(sorted(restart_keys))}", [cmd],
                      lambda: self.sh(cmd, timeout=300))
        elif changed_keys or hba_changed:
            cmd = pgconf.ctl_command(s, "reload")
            self.step("server", True, "reload", [cmd], lambda: self.sh(cmd, timeout=120))
        else:
            self.step("server", False, "running, configuration unchanged")

    # ---- read back -------------------------------------------------------------------------
    def verify_versions(self) -> None:
        s = self.s
        rows = facts.parse_kv_rows(self.pg(facts.VERSIONS_SQL).stdout)
        major = int(rows.get("server", "0")) // 10000
        problems = []
        if major != s.postgres_major:
            problems.append(f"PostgreSQL {major} (want {s.postgres_major})")
        if rows.get("timescaledb") != s.timescaledb_version:
            problems.append(f"TimescaleDB {rows.get('timescaledb') or 'missing'} (want {s.timescaledb_version})")
        if apt.upstream(rows.get("postgis", ""))[0] != s.postgis_version:
            problems.append(f"PostGIS {rows.get('postgis') or 'missing'} (want {s.postgis_version})")
        if "timescaledb" not in rows.get("shared_preload_libraries", ""):
            problems.append("timescaledb is not in shared_preload_libraries")
        if problems:
            raise VerifyError("installed versions differ from the settings: " + "; ".join(problems),
                              hint="check the package source and pins; "
                                   "the source and target must run the same versions")
        num = int(rows["server"])
        compat.check(f"{s.target.name} (running)", compat.pg_version_from_num(num), rows.get("timescaledb"))
        if not apt.same_version(s.postgres_version, compat.pg_version_from_num(num)):
            raise VerifyError(f"the server runs PostgreSQL {num // 10000}.{num % 10000}, the settings want "
                              f"{s.postgres_version}",
                              hint=f"check the package pins (apt-cache policy postgresql-{s.postgres_major}) "
                                   "and restart the cluster")
        self.step("versions", False, f"PostgreSQL {num // 10000}.{num % 10000}, TimescaleDB {rows['timescaledb']}, "
                                     f"PostGIS {rows['postgis']}")

    def role(self) -> None:
        s = self.s
        name = "'" + s.owner_role.replace("'", "''") + "'"
        r = self.pg(facts.ROLE_SQL.format(name=name)).stdout.strip()
        exists = bool(r)
        current, _, canlogin = r.rpartition("|")
        if exists and canlogin == "t" and roles.verifier_matches(current, self._password):
            self.step("role", False, f"{s.owner_role} exists, can log in, password matches {s.app_secret_name}")
            return
        verifier = roles.scram_verifier(self._password)
        sql = roles.role_sql(s.owner_role, verifier, create=not exists)
        what = "create" if not exists else "update password of"
        self.step("role", True, f"{what} {s.owner_role} (password from {s.app_secret_name}, sent as a SCRAM "
                                "verifier on stdin)",
                  [f"{shlex.join(target_cluster(self.host, s).argv())} <<< '{'CREATE' if not exists else 'ALTER'} ROLE "
                   "... PASSWORD ***'"],
                  lambda: target_cluster(self.host, s).run(sql, sensitive=(verifier,)))

    def verify_placement(self) -> None:
        s = self.s
        rows = facts.parse_kv_rows(self.pg(facts.VERSIONS_SQL).stdout)
        if rows.get("data_directory", "").rstrip("/") != s.cluster_dir:
            raise VerifyError(f"data_directory is {rows.get('data_directory')}, not {s.cluster_dir}",
                              hint="inspect the cluster")
        self.require_mount()
        self.step("placement", False, f"data_directory {s.cluster_dir} on {self.f.device} mounted at {s.data_mount}")


def _changed_keys(old: str | None, new: str) -> set:
    def parse(text):
        out = {}
        for line in (text or "").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
        return out

    a, b = parse(old), parse(new)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
