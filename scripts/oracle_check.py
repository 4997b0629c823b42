"""Speed and accuracy of the exact torus flow (neuromf.oracle): time to build the flow table, time for u*(z, r, t) of
N points z ~ p_t at random (r, t), and the largest deviation from a point-by-point LSODA solve (rtol 1e-12) of the
radial ODE on a sample of them. Prints a markdown table and writes it as JSON.

    .venv/bin/python scripts/oracle_check.py                     # 1e5 points, 1,000 checked against LSODA
    .venv/bin/python scripts/oracle_check.py --n 20000 --n-ref 200 --json /tmp/oracle_check.json"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from neuromf.cli import CLIError, add_debug_flag, run_cli  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="oracle_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="points for the timing (default 1e5)")
    ap.add_argument("--n-ref", type=int, default=1000, help="points checked against LSODA (default 1,000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    if args.n < 1 or args.n_ref < 1: raise CLIError(f"--n={args.n} and --n-ref={args.n_ref} must be >= 1")
    torch.set_num_threads(args.threads)
    from neuromf.oracle import FlowTable, exact_mean_velocity, exact_radial_flow, radial_flow_reference, sample_path
    t0 = time.perf_counter(); FlowTable.build(); t_table = time.perf_counter() - t0
    from neuromf.oracle import flow_table
    flow_table()
    g = torch.Generator().manual_seed(args.seed)
    t = torch.rand(args.n, generator=g, dtype=torch.float64) * 0.999 + 0.001
    r = t * torch.rand(args.n, generator=g, dtype=torch.float64)
    z = sample_path(args.n, t, generator=g)[0]
    t0 = time.perf_counter(); u = exact_mean_velocity(z, r, t); t_u = time.perf_counter() - t0
    if not torch.isfinite(u).all(): raise RuntimeError("non-finite u*")
    k = min(args.n_ref, args.n)
    rho, tt, rr = z[:k, :2].norm(dim=1).numpy(), t[:k].numpy(), r[:k].numpy()
    t0 = time.perf_counter(); want = radial_flow_reference(rho, tt, rr); t_ref = time.perf_counter() - t0
    got, m = exact_radial_flow(rho, tt, rr)
    keep = tt - rr > 1e-3 * tt
    m_ref = (rho[keep] - want[keep]) / (tt[keep] - rr[keep])
    out = {"n": args.n, "threads": args.threads, "table_build_s": t_table, "u_star_s": t_u, "points_per_s": args.n / t_u,
           "n_ref": k, "lsoda_s_per_point": t_ref / k, "max_radius_error": float(np.abs(got - want).max()),
           "max_rel_mean_velocity_error": float((np.abs(m[keep] - m_ref) / np.maximum(np.abs(m_ref), 1e-2)).max())}
    print("| quantity | value |\n|---|---|")
    print(f"| flow table (1024 x 1024, DOP853 rtol 1e-12) built in | {t_table:.2f} s |")
    print(f"| u*(z, r, t) of {args.n:,} points z ~ p_t, random (r, t), {args.threads} thread(s) | {t_u:.2f} s ({args.n / t_u:,.0f} points/s) |")
    print(f"| LSODA reference (rtol 1e-12), per point | {1e3 * t_ref / k:.1f} ms |")
    print(f"| max abs. radius error vs LSODA ({k:,} points) | {out['max_radius_error']:.2e} |")
    print(f"| max rel. mean-velocity error vs LSODA | {out['max_rel_mean_velocity_error']:.2e} |")
    if args.json: args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="oracle_check"))
