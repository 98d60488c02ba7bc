"""Plant deliberate bugs in a copy of the mixer layers and check that the equation-level tests catch each one.

    python scripts/mutate_mixers.py                     # every mutation; exit 1 if any survived
    python scripts/mutate_mixers.py --only kda- mamba2-D-sign     # the mutations whose id starts with these
    python scripts/mutate_mixers.py --list              # ids and what each one plants
    python scripts/mutate_mixers.py --all-failures      # run each selection to the end and count the failures

The repository's working tree (tracked and untracked, not ignored, files) is copied once to a temporary
directory; the tests there import that copy (PYTHONPATH, checked before anything runs), and the selection must
pass unmutated first. Then, for each mutation, every (file, old, new) edit is applied with str.replace to the
copy's mixer source (`old` must occur exactly once, so an edit that a refactor has made stale fails loudly as
"stale" instead of planting nothing), the pytest selection runs, the files are restored, and the mutation is
"caught" (some test failed) or "survived" (all passed). The table names the first failing test of each (every
failing test's count per test function with --all-failures). The repository itself is never touched.

Slow (one pytest run per mutation, ~5-25 s each on two cores), so not part of the test suite. The selection is
tests/mixers/test_layer_references.py (the equation-level references), narrowed per mutation with pytest's -k
to the layer it touches (and to the Triton tests for a bug only the fused / Triton path can show).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/mixers/test_layer_references.py"]

KDA, GDN, MAMBA2 = "arena/mixers/kda.py", "arena/mixers/gdn.py", "arena/mixers/mamba2.py"
DELTA, COMMON = "arena/mixers/delta_rule.py", "arena/mixers/common.py"


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    edits: tuple[tuple[str, str, str], ...]  # (file, old, new): `old` must occur exactly once in the file
    select: str = ""  # pytest -k expression: the tests of the layer(s) the bug reaches


def one(id: str, what: str, file: str, old: str, new: str, select: str = "") -> Mutation:
    return Mutation(id, what, ((file, old, new),), select)


NO_L2NORM = ("        q = l2norm(q.view(B, T, self.H, self.K))  # [B, T, H, K]\n"
             "        k = l2norm(k.view(B, T, self.H, self.K))  # [B, T, H, K]\n",
             "        q = q.view(B, T, self.H, self.K)\n"
             "        k = k.view(B, T, self.H, self.K)\n")
BETA = "beta = torch.sigmoid(self.b_proj(x).to(g.dtype))"

MUTATIONS = [
    # the bugs issue 13 planted, all of which survived the tests of the time
    one("kda-no-l2norm", "q and k no longer L2-normalised", DELTA, *NO_L2NORM, select="kda"),
    one("kda-gate-swish", "output gate swish instead of sigmoid", KDA,
        'GatedRMSNorm(V, eps=cfg.norm_eps, activation="sigmoid")',
        'GatedRMSNorm(V, eps=cfg.norm_eps, activation="swish")', select="kda"),
    Mutation("kda-swap-gate-projs", "decay and output-gate projections swapped", (
        (KDA, "raw = (self.f_b(self.f_a(x))", "raw = (self.g_b(self.g_a(x))"),
        (KDA, "        return self.g_b(self.g_a(x))", "        return self.f_b(self.f_a(x))"),
    ), select="kda"),
    one("kda-beta-half", "beta halved", DELTA, BETA, f"{BETA} * 0.5", select="kda"),
    one("gdn-gate-sigmoid", "output gate sigmoid instead of swish", GDN,
        'GatedRMSNorm(V, eps=cfg.norm_eps, activation="swish")',
        'GatedRMSNorm(V, eps=cfg.norm_eps, activation="sigmoid")', select="gdn"),
    one("gdn-dt-bias-sign", "dt_bias sign flipped", GDN,
        "raw = self.a_proj(x).to(dtype) + self.dt_bias.to(dtype)",
        "raw = self.a_proj(x).to(dtype) - self.dt_bias.to(dtype)", select="gdn"),
    one("gdn-beta-half", "beta halved", DELTA, BETA, f"{BETA} * 0.5", select="gdn"),
    one("mamba2-dt-sigmoid", "dt through sigmoid instead of softplus", MAMBA2,
        "dt = F.softplus(dt.to(ct) + self.dt_bias.to(ct))", "dt = torch.sigmoid(dt.to(ct) + self.dt_bias.to(ct))",
        select="mamba2"),
    one("mamba2-D-sign", "the D skip's sign flipped", MAMBA2,
        "y = (o + self.D.to(ct)[:, None] * xs)", "y = (o - self.D.to(ct)[:, None] * xs)", select="mamba2"),
    # more of the same kind: activations, signs, scales, projections, normalisations, conv direction, orders
    one("gdn-no-l2norm", "q and k no longer L2-normalised", DELTA, *NO_L2NORM, select="gdn"),
    one("conv-direction", "short conv taps reversed (the first tap on the current token)", COMMON,
        "y = sum(padded[:, i: i + T] * weight[:, i] for i in range(k))",
        "y = sum(padded[:, i: i + T] * weight[:, k - 1 - i] for i in range(k))"),
    one("conv-cache", "conv cache keeps the oldest inputs instead of the latest (decoding only)", COMMON,
        "return y, padded[:, T:]", "return y, padded[:, :k - 1]"),
    one("l2norm-mean", "L2 norm over the mean of squares instead of the sum (a scale)", COMMON,
        "xf.pow(2).sum(-1, keepdim=True) + eps", "xf.pow(2).mean(-1, keepdim=True) + eps", select="kda or gdn"),
    one("gated-norm-order", "KDA/GDN output gate applied before the RMSNorm instead of after", COMMON,
        "return rms_norm(o, self.norm.weight, self.norm.eps) * self.act(gate)",
        "return rms_norm(o * self.act(gate), self.norm.weight, self.norm.eps)", select="kda or gdn"),
    one("kda-norm-eps", "output RMSNorm ignores norm_eps (fixed 1e-5)", KDA,
        "GatedRMSNorm(V, eps=cfg.norm_eps,", "GatedRMSNorm(V, eps=1e-5,", select="kda"),
    one("v-no-silu", "v's short conv without SiLU", DELTA,
        "self.v_conv = ShortConv(H * V, conv_size)", "self.v_conv = ShortConv(H * V, conv_size, activation=False)",
        select="kda or gdn"),
    one("neg-eigval-decode", "allow_neg_eigval not passed to the decode step", DELTA,
        "S0, allow_neg_eigval=allow_neg_eigval)", "S0, allow_neg_eigval=False)", select="kda or gdn"),
    one("kda-A-no-exp", "decay rate A_log used without exp", KDA,
        "rate = self.A_log.to(dtype).exp()[:, None]", "rate = self.A_log.to(dtype)[:, None]", select="kda"),
    one("kda-decay-sigmoid", "decay softplus replaced by sigmoid", KDA,
        "return -rate * F.softplus(raw)", "return -rate * torch.sigmoid(raw)", select="kda"),
    one("kda-bounded-no-rate", "bounded gate drops exp(A_log)", KDA,
        "torch.sigmoid(rate * raw)", "torch.sigmoid(raw)", select="kda"),
    one("gdn-swap-a-b", "decay read from b_proj instead of a_proj", GDN,
        "raw = self.a_proj(x).to(dtype)", "raw = self.b_proj(x).to(dtype)", select="gdn"),
    one("mamba2-swap-BC", "B and C swapped", MAMBA2,
        "xs, Bm, Cm = xBC.split(", "xs, Cm, Bm = xBC.split(", select="mamba2"),
    one("mamba2-A-sign", "A = -exp(-A_log) instead of -exp(A_log)", MAMBA2,
        "A = -torch.exp(self.A_log.to(ct))", "A = -torch.exp(-self.A_log.to(ct))", select="mamba2"),
    one("mamba2-D-on-v", "D skip scales dt * x instead of x", MAMBA2,
        "self.D.to(ct)[:, None] * xs)", "self.D.to(ct)[:, None] * v)", select="mamba2"),
    one("mamba2-gate-sigmoid", "gate sigmoid(z) instead of silu(z)", MAMBA2,
        "y = y * F.silu(z)", "y = y * torch.sigmoid(z)", select="mamba2"),
    one("mamba2-norm-ungrouped", "RMSNorm over all of d_inner instead of per group", MAMBA2,
        "y.unflatten(-1, (self.cfg.ngroups, -1)), eps=", "y.unflatten(-1, (1, -1)), eps=", select="mamba2"),
    one("mamba2-conv-no-silu", "xBC conv without SiLU", MAMBA2,
        "bias=cfg.conv_bias, activation=True)", "bias=cfg.conv_bias, activation=False)", select="mamba2"),
    # bugs only the fused / Triton path can show (the interpreter tests)
    one("kda-fused-decay-proj", "fused decay gate fed the output-gate projection", KDA,
        "decay_gate(self.f_b(self.f_a(x)),", "decay_gate(self.g_b(self.g_a(x)),", select="triton and kda"),
    one("mamba2-fused-norm-order", "fused gated norm with the norm before the gate", MAMBA2,
        'activation="swish", norm_before_gate=False', 'activation="swish", norm_before_gate=True',
        select="triton and mamba2"),
]


def copy_tree(dst: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run_pytest(root: Path, select: str, all_failures: bool) -> tuple[int, list[str]]:
    """(pytest exit code, ids of the failed tests) for TESTS in the copy at `root`."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *TESTS]
    cmd += [] if all_failures else ["-x"]
    cmd += ["-k", select] if select else []
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    return proc.returncode, failed


def apply(root: Path, mutation: Mutation) -> dict[Path, str] | str:
    """Apply the edits; the original texts by path, or why an edit is stale (then nothing stays applied)."""
    originals: dict[Path, str] = {}
    for rel, old, new in mutation.edits:
        path = root / rel
        text = path.read_text()  # after this mutation's earlier edits to the same file
        originals.setdefault(path, text)
        if text.count(old) != 1:
            restore(originals)
            return f"{rel}: {old!r} occurs {text.count(old)} times, not once"
        path.write_text(text.replace(old, new))
    return originals


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def summary(failed: list[str], all_failures: bool) -> str:
    if not failed:
        return ""
    if not all_failures:
        return failed[0].split("::")[-1]
    counts: dict[str, int] = {}
    for test in failed:
        fn = test.split("::")[-1].split("[")[0]
        counts[fn] = counts.get(fn, 0) + 1
    return ", ".join(f"{fn} x{n}" for fn, n in counts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="run the mutations whose id starts with one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--all-failures", action="store_true", help="run each selection to the end (slower)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(m.id.startswith(p) for p in args.only)]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:26} {m.what}  [{', '.join(sorted({f for f, _, _ in m.edits}))}]")
        return 0
    if not chosen:
        print(f"no mutation id starts with {args.only}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="mutate_mixers_") as tmp:
        root = Path(tmp)
        copy_tree(root)
        where = subprocess.run([sys.executable, "-c", "import arena; print(arena.__file__)"], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
        if not where.stdout.strip().startswith(str(root)):
            print(f"the copy is not what gets imported: {where.stdout.strip() or where.stderr}", file=sys.stderr)
            return 2
        rc, failed = run_pytest(root, "", all_failures=False)
        if rc != 0:
            print(f"the unmutated copy fails the selection (pytest exit {rc}): {failed}", file=sys.stderr)
            return 2
        print(f"copy at {root}, unmutated selection passes; {len(chosen)} mutations\n")
        print(f"{'mutation':26} {'result':9} caught by")
        rows = []
        for m in chosen:
            applied = apply(root, m)
            if isinstance(applied, str):
                result, detail = "STALE", applied
            else:
                try:
                    rc, failed = run_pytest(root, m.select, args.all_failures)
                finally:
                    restore(applied)
                result = {0: "SURVIVED", 1: "caught"}.get(rc, f"error {rc}")
                detail = summary(failed, args.all_failures) or ("(no test failed)" if rc == 0 else "")
            rows.append((m, result))
            print(f"{m.id:26} {result:9} {detail}", flush=True)
    bad = [m.id for m, result in rows if result != "caught"]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} caught" + (f"; not caught: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
