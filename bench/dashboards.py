"""Dashboard load time in a real browser: each dashboard opened cold, then warm, as the analyst.

"Loaded" = every chart shown (of a dashboard with tabs: the first tab's) has drawn (canvas, svg, table, big
number) or failed, the page scrolled so charts below the fold count too. Warm = the same dashboard opened again
right after: the browser has Superset's static assets cached, and Superset its chart results (the data cache,
emptied by every `./drc transform`, superset_config.py). Writes bench/results/dashboards.json and .md.
Needs Superset running and the dashboards provisioned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from bench.machine import describe, machine
from core.access import password
from superset.bundle import chart_specs, load_dashboards, sections

RESULTS = Path(__file__).resolve().parent / "results"
LOGIN = "wjw_analyst"
TIMEOUT = 120
STATE_JS = """
return [...document.querySelectorAll('[data-test-chart-name]')].filter(el => el.offsetParent !== null).map(el => ({
  loading: !!el.querySelector('.loading, [aria-label="Loading"], .ant-skeleton'),
  done: !!el.querySelector('canvas, svg, table, .ant-alert-error')}));"""


def browser():
    profile = tempfile.mkdtemp(prefix="drc-bench-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1920,1080",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options), profile


def log_in(driver, base: str, attempts: int = 3) -> None:
    """The login form can drop keys typed before React hydrates it: check what it holds, retry."""
    for _ in range(attempts):
        driver.get(f"{base}/login/")
        user = WebDriverWait(driver, 60).until(EC.element_to_be_clickable((By.ID, "username")))
        secret = driver.find_element(By.ID, "password")
        user.clear()
        user.send_keys(LOGIN)
        secret.clear()
        secret.send_keys(password(LOGIN))
        if user.get_attribute("value") == LOGIN and secret.get_attribute("value") == password(LOGIN):
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            try:
                WebDriverWait(driver, 60).until(lambda d: "/login" not in d.current_url)
                return
            except TimeoutException:
                continue
    raise RuntimeError(f"cannot log in to Superset as {LOGIN}")


def load(driver, base: str, slug: str, charts: int) -> float:
    started = time.monotonic()
    driver.get(f"{base}/superset/dashboard/{slug}/")
    while time.monotonic() - started < TIMEOUT:
        driver.execute_script("window.scrollBy(0, 600)")
        states = driver.execute_script(STATE_JS)
        if len(states) >= charts and all(s["done"] and not s["loading"] for s in states):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"{slug}: not all {charts} charts rendered within {TIMEOUT}s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm loads per dashboard (median reported)")
    args = parser.parse_args(argv)
    measured_on = machine()
    base = f"http://127.0.0.1:{os.environ['DRC_SUPERSET_PORT']}"
    driver, profile = browser()
    rows = []
    try:
        log_in(driver, base)
        for dash in load_dashboards():
            charts = len(chart_specs(sections(dash)[0][1]))  # what opening shows: the first tab
            cold = load(driver, base, dash["slug"], charts)
            warm = [load(driver, base, dash["slug"], charts) for _ in range(args.repeat)]
            rows.append(
                {
                    "dashboard": dash["title"],
                    "slug": dash["slug"],
                    "charts": charts,
                    "cold_s": round(cold, 2),
                    "warm_median_s": round(statistics.median(warm), 2),
                    "warm_max_s": round(max(warm), 2),
                }
            )
            print(
                f"  {dash['title']:<16} {charts:>3} charts  cold {cold:5.2f} s  warm {rows[-1]['warm_median_s']:5.2f} s"
            )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": measured_on,
        "warm_loads": args.repeat,
        "scale": os.environ.get("DRC_BENCH_SCALE", "demo (./drc demo)"),
        "caching": "browser: static assets; Superset: chart results (FileSystemCache, emptied by each transform)",
        "target_warm_s": 3.0,
        "dashboards": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboards.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    lines = [
        "# 看板加载时间 · dashboard load (headless Chromium, analyst login)",
        "",
        f"{describe(measured_on)}; {args.repeat} warm loads per dashboard; scale: {result['scale']}; "
        f"caching: {result['caching']}.",
        "",
        "| 看板 | 图表数 | 首次 (s) | 再次打开中位数 (s) | 再次打开最大 (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dashboard']} | {r['charts']} | {r['cold_s']} | {r['warm_median_s']} | {r['warm_max_s']} |" for r in rows
    ]
    (RESULTS / "dashboards.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
