"""The supervision dashboards, as each role sees them, in a real browser and through Superset's API.

- Every role (config/access/roles.yaml) logs in with headless Chromium and opens every dashboard it may:
  each chart renders, none shows an error or an empty result; screenshots go to tests/results/.
- An institution user opens only its dashboards, and every row any of its charts returns is its own.
- Numbers shown equal marts.fct_indicator_value, dates included (a time axis point is the mart's day).

Needs ./drc test's environment (Superset running) and the `pipeline_done` fixture (pipeline ran,
superset/provision.py ran).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import create_engine, text

from core.access import load_roles, password
from superset.bundle import DATABASE_NAME, chart_specs, load_dashboards, sections

TIMEOUT = 90
RESULTS = Path(__file__).resolve().parent / "results"
ANALYST = "wjw_analyst"
ENGINEER = "sjgcs"  # the data_engineer role: SQL Lab
INSTITUTION = "410182001"  # 荥阳市人民医院
INSTITUTION_USER = f"org_{INSTITUTION}"
# A chart renders "no data" with one of these (Superset's own zh catalog, messages.po, and the en UI); an error
# with an alert.
EMPTY_TEXTS = ("此查询没有数据返回", "无结果", "没有数据", "No results", "No data")


def env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: run the tests through ./drc test"
    return value


def empty_ok_titles(rows: list[dict]) -> set[str]:
    """Charts whose spec says empty_ok: a list of problems or alerts, or a ranking with nothing to rank yet (no
    discharge in a new county), may rightly be empty; a figure may not."""
    return {spec["title"] for spec in chart_specs(rows) if spec.get("empty_ok")}


def base_url() -> str:
    return f"http://127.0.0.1:{env('DRC_SUPERSET_PORT')}"


def allowed_dashboards(login: str) -> list[dict]:
    roles, users = load_roles()
    user = next(u for u in users if u.login == login)
    allowed = roles[user.role].dashboards
    return [d for d in load_dashboards() if allowed is None or d["slug"] in allowed]


class Api:
    """Superset's REST API as one user (JWT from /api/v1/security/login)."""

    def __init__(self, login: str):
        self.session = requests.Session()
        reply = self.session.post(
            f"{base_url()}/api/v1/security/login",
            json={"username": login, "password": password(login), "provider": "db"},
            timeout=60,
        )
        assert reply.status_code == 200, f"{login} cannot log in to Superset's API: {reply.text[:200]}"
        self.session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def get(self, path: str, **params):
        return self.session.get(f"{base_url()}{path}", params=params, timeout=120)

    def dashboards(self) -> dict[str, int]:
        reply = self.get("/api/v1/dashboard/", q="(page_size:100)")
        assert reply.status_code == 200, reply.text[:300]
        return {d["slug"]: d["id"] for d in reply.json()["result"]}

    def charts(self, slug: str) -> dict[str, int]:
        reply = self.get(f"/api/v1/dashboard/{slug}/charts")
        assert reply.status_code == 200, f"charts of {slug}: {reply.status_code} {reply.text[:300]}"
        return {c["slice_name"]: c["id"] for c in reply.json()["result"]}

    def chart_data(self, chart_id: int) -> dict:
        reply = self.get(f"/api/v1/chart/{chart_id}/data/")
        assert reply.status_code == 200, f"chart {chart_id}: {reply.status_code} {reply.text[:300]}"
        return reply.json()["result"][0]


@pytest.fixture(scope="module")
def warehouse():
    url = f"postgresql+psycopg2://drc:{quote(env('DRC_PG_PASSWORD'), safe='')}@127.0.0.1:{env('DRC_PG_PORT')}/warehouse"
    engine = create_engine(url)
    yield engine
    engine.dispose()


def log_in(driver, login: str, attempts: int = 3) -> None:
    """Log in through the form (the React form can drop keystrokes typed before it hydrates: check, retry)."""
    driver.delete_all_cookies()
    secret = password(login)
    for _ in range(attempts):
        driver.get(f"{base_url()}/login/")
        username = WebDriverWait(driver, TIMEOUT).until(EC.element_to_be_clickable((By.ID, "username")))
        pw_field = driver.find_element(By.ID, "password")
        for field, value in ((username, login), (pw_field, secret)):
            field.clear()
            field.send_keys(value)
        if username.get_attribute("value") != login or pw_field.get_attribute("value") != secret:
            continue
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        try:
            WebDriverWait(driver, TIMEOUT).until(lambda d: "/login" not in d.current_url)
            return
        except TimeoutException:
            continue
    pytest.fail(f"Superset login as {login} failed (still on the login page)")


def chart_states(driver) -> list[dict]:
    """Each chart holder shown (in the open tab): its name and whether it is loading, failed, empty or drawn."""
    return driver.execute_script("""
        return [...document.querySelectorAll('[data-test-chart-name]')].filter(el => el.offsetParent !== null)
          .map(el => {
          const text = el.innerText || '';
          return {
            name: el.getAttribute('data-test-chart-name'),
            loading: !!el.querySelector('.loading, [aria-label="Loading"], .ant-skeleton'),
            error: !!el.querySelector('.ant-alert-error, [data-test="error-message"], .alert-danger'),
            text: text.slice(0, 300),
            drawn: !!el.querySelector('canvas, svg, table, .superset-legacy-chart-big-number, .big_number'),
          };
        });""")


def wait_for_charts(driver, expected: int) -> list[dict]:
    """Scroll through the shown charts until every one has finished (drawn or failed)."""
    deadline = time.monotonic() + TIMEOUT
    states: list[dict] = []
    while time.monotonic() < deadline:
        driver.execute_script("window.scrollBy(0, 600)")
        states = chart_states(driver)
        if (
            len(states) >= expected
            and not any(s["loading"] for s in states)
            and all(s["drawn"] or s["error"] for s in states)
        ):
            break
        time.sleep(0.25)
    return states


def open_tab(driver, title: str) -> None:
    tab = WebDriverWait(driver, TIMEOUT).until(
        EC.element_to_be_clickable((By.XPATH, f"//div[@role='tab'][.//*[normalize-space(text())='{title}']]"))
    )
    driver.execute_script("window.scrollTo(0, 0)")
    tab.click()


@pytest.mark.parametrize("login", [ANALYST, INSTITUTION_USER])
def test_every_dashboard_renders_for_each_role(pipeline_done, browser, login):
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_in(browser, login)
    problems = []
    for dash in allowed_dashboards(login):
        browser.get(f"{base_url()}/superset/dashboard/{dash['slug']}/")
        for n, (tab, rows) in enumerate(sections(dash)):
            where = dash["slug"] + (f" [{tab}]" if tab else "")
            if tab and n:
                open_tab(browser, tab)
            expected = len(chart_specs(rows))
            may_be_empty = empty_ok_titles(rows)
            states = wait_for_charts(browser, expected)
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(RESULTS / f"dashboard_{login}_{dash['slug']}{f'_{n}' if tab else ''}.png"))
            assert browser.title == dash["title"], f"{dash['slug']}: page title {browser.title!r}"
            if len(states) != expected:
                problems.append(f"{where}: {len(states)} of {expected} charts shown")
            for s in states:
                if s["loading"] or not (s["drawn"] or s["error"]):
                    problems.append(f"{where} / {s['name']}: still loading after {TIMEOUT}s")
                elif s["error"]:
                    problems.append(f"{where} / {s['name']}: error: {s['text'][:200]}")
                elif any(t in s["text"] for t in EMPTY_TEXTS) and s["name"] not in may_be_empty:
                    problems.append(f"{where} / {s['name']}: no data")
    assert not problems, f"as {login}:\n" + "\n".join(problems)


def test_institution_user_sees_its_own_rows_only(pipeline_done):
    api = Api(INSTITUTION_USER)
    visible = api.dashboards()
    assert set(visible) == {d["slug"] for d in allowed_dashboards(INSTITUTION_USER)}, visible
    # a dashboard not granted to the role is not listed; asking for one of its charts' data anyway gives
    # nothing: refused, or (the chart shares a dataset) no row passes the institution's row-level filter
    for chart_id in Api(ANALYST).charts("cockpit").values():
        reply = api.get(f"/api/v1/chart/{chart_id}/data/")
        leaked = (
            []
            if reply.status_code in (403, 404)
            else [row for row in reply.json()["result"][0]["data"] if any(v is not None for v in row.values())]
        )
        assert not leaked, f"institution user read cockpit chart {chart_id}: {leaked[:3]}"

    own_name = None
    seen_rows = 0
    may_be_empty = {
        title for dash in load_dashboards() for _, rows in sections(dash) for title in empty_ok_titles(rows)
    }
    for slug in visible:
        for name, chart_id in api.charts(slug).items():
            result = api.chart_data(chart_id)
            assert result["rowcount"] > 0 or name in may_be_empty, f"{slug} / {name}: no rows for the institution user"
            for row in result["data"]:
                for column in ("org_code", "org_name"):
                    if column in row:
                        seen_rows += 1
                        if column == "org_name":
                            own_name = own_name or row[column]
                            assert row[column] == own_name, f"{slug} / {name}: row of {row[column]}"
                        else:
                            assert row[column] == INSTITUTION, f"{slug} / {name}: row of {row[column]}"
    assert own_name == "荥阳市人民医院" and seen_rows > 0
    # the analyst's view of the same ranking holds every institution
    analyst = Api(ANALYST)
    ranking = analyst.chart_data(analyst.charts("data-quality")["机构综合得分排名（各机构最近一月，同类机构排名）"])
    assert len({r["org_name"] for r in ranking["data"]}) > 20


def test_chart_numbers_and_days_equal_the_indicator_mart(pipeline_done, warehouse):
    api = Api(ANALYST)
    with warehouse.connect() as conn:
        mart = {
            (code, grain, start, name): None if value is None else float(value)
            for code, grain, start, name, value in conn.execute(
                text(
                    "SELECT indicator_code, grain_type, period_start, grain_name, value "
                    "FROM marts.fct_indicator_value WHERE period_type = 'month'"
                )
            )
        }
    latest = max(start for _, _, start, _ in mart)

    # a time axis: every point's day is the mart's period_start (Superset shows times in UTC)
    trend = api.chart_data(api.charts("cockpit")["门急诊人次趋势"])
    assert trend["rowcount"] > 0
    names = {"门急诊人次": "HO01", "门诊人次": "HO02", "急诊人次": "HO03"}
    for row in trend["data"]:
        day = datetime.fromtimestamp(row["period_start"] / 1000, tz=UTC).date()
        key = (names[row["indicator_name"]], "county", day, "荥阳市")
        assert key in mart, f"the chart shows {row['indicator_name']} on {day}, a day the mart does not have"
        assert float(row["指标值"]) == pytest.approx(mart[key]), key

    # a daily axis (the original case: every day shown one day early): the arrival heatmap's days and
    # rows are the collection log's, day by day
    with warehouse.connect() as conn:
        arrived = {
            day: int(rows)
            for day, rows in conn.execute(text("SELECT business_date, sum(rows) FROM ingest.v_timeliness GROUP BY 1"))
        }
    heat = api.chart_data(api.charts("collection")["数据到达热力图（层级 × 业务日）"])
    shown: dict = {}
    for row in heat["data"]:
        day = datetime.fromtimestamp(row["business_date"] / 1000, tz=UTC).date()
        shown[day] = shown.get(day, 0) + int(row["到达行数"])
    assert shown and min(shown) == min(arrived), f"first day shown {min(shown)}, first business day {min(arrived)}"
    assert all(shown[day] == arrived[day] for day in shown), {d: (shown[d], arrived.get(d)) for d in shown}

    # a bar per institution for the current month
    fees = api.chart_data(api.charts("medical-service")["门诊病人次均医药费用（按机构）"])
    assert fees["rowcount"] > 5
    for row in fees["data"]:
        key = ("HO15", "institution", latest, row["org_name"])
        assert row["门诊病人次均医药费用（元）"] == pytest.approx(mart[key]), key  # None: no visit, no value

    # a big number: the county's current month
    big = api.chart_data(api.charts("cockpit")["门急诊人次"])
    last = max(big["data"], key=lambda r: r["period_start"])
    assert datetime.fromtimestamp(last["period_start"] / 1000, tz=UTC).date() == latest
    assert float(last["门急诊人次（人次）"]) == mart[("HO01", "county", latest, "荥阳市")]


def test_descriptions_carry_the_catalog_formula(pipeline_done):
    """How a number is counted is on the chart itself: its description is the catalog's formula."""
    from core.indicators import load_catalog

    catalog = load_catalog()
    api = Api(ANALYST)
    reply = api.get("/api/v1/chart/", q="(page_size:200,columns:!(slice_name,description))")
    described = {c["slice_name"]: c["description"] or "" for c in reply.json()["result"]}
    for chart, codes in {
        "基层诊疗量占比": ["MC02"],
        "门急诊人次趋势": ["HO01", "HO02", "HO03"],
        "各机构工作效率指标": ["HO06", "HO07", "HO08", "HO09", "HO10"],
    }.items():
        for code in codes:
            assert catalog.indicators[code].formula in described[chart], f"{chart}: no formula of {code}"


def test_no_role_can_reach_personal_data(pipeline_done, warehouse):
    """Superset reads the warehouse as drc_bi, which cannot read any table holding 身份证号 or phone."""
    url = (
        f"postgresql+psycopg2://drc_bi:{quote(env('DRC_BI_DB_PASSWORD'), safe='')}"
        f"@127.0.0.1:{env('DRC_PG_PORT')}/warehouse"
    )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            readable = (
                conn.execute(
                    text(
                        "SELECT table_schema || '.' || table_name FROM information_schema.column_privileges "
                        "WHERE grantee = 'drc_bi' AND privilege_type = 'SELECT' "
                        "AND column_name ~ '(id_number|phone|address)$'"
                    )
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert readable == [], f"drc_bi can read personal data in {sorted(set(readable))}"


def _sql_lab(api: Api, database_id: int, sql: str) -> requests.Response:
    """Run a statement in SQL Lab as the API's user (synchronously, with the session's CSRF token)."""
    token = api.get("/api/v1/security/csrf_token/")
    return api.session.post(
        f"{base_url()}/api/v1/sqllab/execute/",
        json={"database_id": database_id, "sql": sql, "runAsync": False, "schema": "marts"},
        headers={"X-CSRFToken": token.json()["result"] if token.ok else "", "Referer": base_url()},
        timeout=120,
    )


def test_sql_lab_is_for_engineers_and_shows_them_no_identifier(pipeline_done):
    """SQL Lab reads the warehouse as drc_bi: an engineer can query the marts but not select an ID number; an
    analyst cannot use SQL Lab at all."""
    engineer = Api(ENGINEER)
    databases = engineer.get("/api/v1/database/", q="(page_size:100)").json()["result"]
    (database_id,) = [d["id"] for d in databases if d["database_name"] == DATABASE_NAME]
    counted = _sql_lab(engineer, database_id, "select count(*) as visits from marts.fct_encounter")
    assert counted.status_code == 200, counted.text[:300]
    assert counted.json()["data"][0]["visits"] > 0
    refused = _sql_lab(engineer, database_id, "select id_number from marts.dim_patient limit 1")
    assert refused.status_code != 200 and "permission denied" in refused.text, refused.text[:300]
    analyst = _sql_lab(Api(ANALYST), database_id, "select count(*) from marts.fct_encounter")
    assert analyst.status_code in (400, 401, 403), analyst.text[:300]
    assert "visits" not in analyst.text and '"data"' not in analyst.text
