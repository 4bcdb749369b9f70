"""The analysts' Superset dashboard shows the mart's real numbers, in Chinese.

A headless Chromium logs into Superset as admin, opens 医共体门急诊服务量监测 and reads the table
chart 各机构每日门急诊人次: its totals row must equal the sums over marts.fct_daily_outpatient_visits
and every row on its first page must equal the mart's figures for that day and institution.
A screenshot is kept in tests/results/superset_dashboard.png.

Needs ./drc test's environment (DRC_* variables), Superset running, and the `pipeline_done`
fixture (tests/conftest.py: pipeline ran, mart filled, superset/provision.py ran).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import create_engine, text

TIMEOUT = 60  # seconds for every wait: the first chart query after start-up can be slow
DASHBOARD_PATH = "/superset/dashboard/outpatient-visits/"
DASHBOARD_TITLE = "医共体门急诊服务量监测"
TABLE_CHART = "各机构每日门急诊人次"
TABLE_HEADERS = ["就诊日期", "机构名称", "门急诊人次", "门诊人次", "急诊人次"]
SCREENSHOT = Path(__file__).resolve().parent / "results" / "superset_dashboard.png"


def env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: run the tests through ./drc test"
    return value


def number(cell: str) -> int:
    """'12,345' (Superset's ',d' format) -> 12345."""
    digits = re.sub(r"[^\d-]", "", cell)
    assert digits, f"expected a number in the table, got {cell!r}"
    return int(digits)


@pytest.fixture
def mart():
    """What the dashboard must show, straight from the warehouse."""
    url = (f"postgresql+psycopg2://drc:{quote(env('DRC_PG_PASSWORD'), safe='')}"
           f"@127.0.0.1:{env('DRC_PG_PORT')}/warehouse")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            totals = conn.execute(text(
                "SELECT count(*), sum(total_visits), sum(outpatient_visits), sum(emergency_visits)"
                " FROM marts.fct_daily_outpatient_visits")).one()
            cells = conn.execute(text(
                "SELECT visit_date, org_name, sum(total_visits), sum(outpatient_visits),"
                " sum(emergency_visits) FROM marts.fct_daily_outpatient_visits"
                " GROUP BY visit_date, org_name")).all()
    finally:
        engine.dispose()
    assert totals[0] > 0, "marts.fct_daily_outpatient_visits is empty: nothing to compare with"
    return {
        "totals": tuple(int(v) for v in totals[1:]),
        "cells": {(d.isoformat(), org): (int(t), int(o), int(e)) for d, org, t, o, e in cells},
    }


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="drc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1600,1600",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    # An explicit chromedriver path: selenium-manager must never try to download one.
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(driver, base: str, attempts: int = 3) -> None:
    """Log in through the form. The React form can drop keystrokes typed before it has hydrated, so each
    attempt checks the fields hold what was typed before submitting, and a lost attempt is retried."""
    password = env("DRC_SUPERSET_ADMIN_PASSWORD")
    for _ in range(attempts):
        driver.get(f"{base}/login/")
        wait = WebDriverWait(driver, TIMEOUT)
        username_field = wait.until(EC.element_to_be_clickable((By.ID, "username")))
        password_field = driver.find_element(By.ID, "password")
        for field, value in ((username_field, "admin"), (password_field, password)):
            field.clear()
            field.send_keys(value)
        if username_field.get_attribute("value") != "admin" or password_field.get_attribute("value") != password:
            continue
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        try:
            WebDriverWait(driver, TIMEOUT).until(lambda d: "/login" not in d.current_url)   # slow when busy
            return
        except TimeoutException:
            continue
    pytest.fail("Superset login as admin failed (still on the login page): "
                "is DRC_SUPERSET_ADMIN_PASSWORD the one migrate_superset set?")


def read_table(driver) -> dict | None:
    """Header, rows and totals of the table chart once it has rendered with data, else None."""
    try:
        holder = driver.find_element(
            By.CSS_SELECTOR, f'[data-test-chart-name="{TABLE_CHART}"]')
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", holder)
        # With sticky headers the chart is three <table>s (head, body, totals): search them all.
        totals = [td.text for td in holder.find_elements(By.CSS_SELECTOR, "table tfoot td")]
        rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")]
                for tr in holder.find_elements(By.CSS_SELECTOR, "table tbody tr")]
        headers = [th.text for th in holder.find_elements(By.CSS_SELECTOR, "table thead th")]
    except (NoSuchElementException, StaleElementReferenceException):
        return None  # not rendered yet, or re-rendered while we read it
    if not rows or len(totals) < 4 or not all(re.search(r"\d", t) for t in totals[-3:]):
        return None
    return {"headers": headers, "rows": rows, "totals": totals}


def test_dashboard_shows_mart_in_chinese(pipeline_done, mart, browser):
    base = f"http://127.0.0.1:{env('DRC_SUPERSET_PORT')}"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        log_in(browser, base)
        browser.get(base + DASHBOARD_PATH)
        try:
            WebDriverWait(browser, TIMEOUT).until(
                EC.presence_of_element_located(
                    (By.CSS_SELECTOR, f'[data-test-chart-name="{TABLE_CHART}"]')))
        except TimeoutException:
            pytest.fail(f"dashboard {DASHBOARD_PATH} has no chart {TABLE_CHART!r} after "
                        f"{TIMEOUT}s: did superset/provision.py run?")
        try:
            table = WebDriverWait(browser, TIMEOUT, poll_frequency=1).until(read_table)
        except TimeoutException:
            body = browser.find_element(By.TAG_NAME, "body").text[:2000]
            pytest.fail(f"table chart {TABLE_CHART!r} did not show data within {TIMEOUT}s; "
                        f"page text:\n{body}")
        # Let the other charts finish too, for a complete screenshot (best effort).
        try:
            WebDriverWait(browser, 15).until_not(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".loading, [aria-label='Loading']"))
        except TimeoutException:
            pass
        browser.execute_script("window.scrollTo(0, 0)")

        page = browser.find_element(By.TAG_NAME, "body").text
        # The dashboard header is an editable input (not in body text); Superset also sets the
        # document title to it.
        assert browser.title == DASHBOARD_TITLE, f"page title is {browser.title!r}"
        # Superset's own UI in Chinese (menu "看板" = Dashboards, totals row "汇总" = Summary),
        # not just our Chinese chart titles.
        for zh in ("看板", "汇总"):
            assert zh in page, f"Superset UI is not in Chinese: {zh!r} missing from the page"

        assert table["headers"] == TABLE_HEADERS, f"table columns: {table['headers']}"

        shown_totals = tuple(number(t) for t in table["totals"][-3:])
        assert shown_totals == mart["totals"], (
            f"totals row (门急诊, 门诊, 急诊) shows {shown_totals}, "
            f"the mart sums to {mart['totals']}")

        for row in table["rows"]:
            assert len(row) == 5, f"unexpected table row {row}"
            key = (row[0], row[1])
            assert key in mart["cells"], f"row {key} is on the dashboard but not in the mart"
            shown = tuple(number(c) for c in row[2:])
            assert shown == mart["cells"][key], (
                f"{key}: dashboard shows (门急诊, 门诊, 急诊) {shown}, "
                f"mart has {mart['cells'][key]}")
    finally:
        browser.save_screenshot(str(SCREENSHOT))
