"""The admin UI in a real headless Chromium against gunicorn (2 workers, Redis, PostgreSQL):
every page loads with no console error, and the whole flow works from the browser: sign in,
add an upstream, see its tools, call one, disable it and see the call refused, make and
delete a virtual server, issue a token, sign out. Screenshots go to `artifacts/admin-ui/`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_MINUTES, make_token
from tests.support.browser import chromium, console_errors, screenshot
from tests.support.gunicorn_process import StartGunicorn, gunicorn_env
from tests.upstreams.processes import RunningUpstream

ADMIN_TOKEN = make_token("operator", ("admin",), minutes=RUN_MINUTES)


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _page_changed_under_us(error: Exception) -> bool:
    """A form post replaces the document while the wait reads it: Chromium then reports
    the element as stale, or as a node that no longer belongs to the document."""
    from selenium.common.exceptions import StaleElementReferenceException

    return isinstance(error, StaleElementReferenceException) or (
        "does not belong to the document" in str(error)
    )


def wait_for(driver: Any, css: str, text: str | None = None, timeout: float = 20.0) -> Any:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def tolerant(condition: Any) -> Any:
        def check(drv: Any) -> Any:
            try:
                return condition(drv)
            except WebDriverException as error:
                if _page_changed_under_us(error):
                    return False
                raise

        return check

    wait = WebDriverWait(driver, timeout)
    if text is not None:
        wait.until(tolerant(ec.text_to_be_present_in_element((_by("CSS_SELECTOR"), css), text)))
    return wait.until(tolerant(ec.presence_of_element_located((_by("CSS_SELECTOR"), css))))


def load(driver: Any, url: str, name: str) -> str:
    """Open `url`, screenshot it as `name`, and return its page text after checking the
    console stayed clean."""
    driver.get(url)
    wait_for(driver, "main")
    screenshot(driver, name)
    assert console_errors(driver) == [], f"console errors on {url}"
    text: str = driver.find_element(_by("TAG_NAME"), "main").text
    return text


def fill(driver: Any, css: str, value: str) -> None:
    field = driver.find_element(_by("CSS_SELECTOR"), css)
    field.clear()
    field.send_keys(value)


def submit(driver: Any, form_css: str, timeout: float = 20.0) -> None:
    """Post the form and wait until its answer has replaced the page: what is read next is
    the answer, never the page the form was on (which may hold the same text)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(_by("TAG_NAME"), "html")
    driver.find_element(_by("CSS_SELECTOR"), f"{form_css} button[type=submit]").click()

    def replaced(_: Any) -> bool:
        try:
            page.is_enabled()
        except WebDriverException as error:
            if _page_changed_under_us(error):
                return True
            raise
        return False

    WebDriverWait(driver, timeout).until(replaced)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


@pytest.fixture
def gateway_url(
    gunicorn: StartGunicorn, postgres_url: str, redis_base_url: str, cache_prefix: str
) -> str:
    env = gunicorn_env(
        postgres_url,
        CACHE_TYPE="redis",
        REDIS_URL=redis_base_url,
        CACHE_PREFIX=cache_prefix,
        TOOL_TIMEOUT="5",
    )
    return gunicorn(env, workers=2).url


def test_every_page_loads_clean_and_the_whole_flow_works_in_chromium(
    browser: Any, gateway_url: str, own_upstream: RunningUpstream
) -> None:
    driver = browser
    # Signed out, every page leads to the sign-in form.
    load(driver, f"{gateway_url}/admin/tools", "01-sign-in")
    assert driver.current_url.endswith("/admin/signin")
    fill(driver, "textarea[name=token]", "not-a-token")
    submit(driver, "form[action='/admin/signin']")
    wait_for(driver, ".notice.error", "Sign-in refused")
    # The refused sign-in answers 401, which Chromium logs as the page's failed load.
    (refused,) = console_errors(driver)
    assert "/admin/signin" in refused and "status of 401" in refused

    fill(driver, "textarea[name=token]", ADMIN_TOKEN)
    submit(driver, "form[action='/admin/signin']")
    wait_for(driver, ".notice.ok", "Signed in as operator.")

    # Add our test upstream through the form.
    fill(driver, "input[name=name]", "docs")
    fill(driver, "input[name=url]", own_upstream.url)
    submit(driver, "form[action='/admin/upstreams']")
    wait_for(driver, ".notice.ok", "Upstream 'docs' added.")
    screenshot(driver, "02-upstreams")
    assert console_errors(driver) == []

    # Its tools, found by searching.
    text = load(driver, f"{gateway_url}/admin/tools?q=docs", "03-tools")
    assert "docs__echo" in text and "docs__add" in text
    driver.find_element(_by("LINK_TEXT"), "docs__echo").click()
    wait_for(driver, "h1", "docs__echo")
    assert console_errors(driver) == []

    # Call it from the page.
    fill(driver, "textarea[name=arguments]", '{"text": "hello from Chromium"}')
    submit(driver, "form[action$='/call']")
    result = wait_for(driver, "#call-result", "hello from Chromium")
    assert result.text == "hello from Chromium"
    screenshot(driver, "04-tool-called")
    assert console_errors(driver) == []

    # Disable it; the next call is refused (whichever worker serves it).
    driver.find_element(_by("ID"), "toggle").click()
    wait_for(driver, ".notice.ok", "Tool disabled.")
    for attempt in range(3):
        fill(driver, "textarea[name=arguments]", f'{{"text": "attempt {attempt}"}}')
        submit(driver, "form[action$='/call']")
        wait_for(driver, "#call-error", "Tool is disabled: docs__echo")
    screenshot(driver, "05-tool-refused")
    assert console_errors(driver) == []

    # A virtual server with one of its tools, then deleted.
    load(driver, f"{gateway_url}/admin/servers", "06-servers")
    fill(driver, "input[name=id]", "desk")
    driver.find_element(_by("XPATH"), "//select[@name='tools']/option[text()='docs__add']").click()
    submit(driver, "form[action='/admin/servers']")
    wait_for(driver, ".notice.ok", "Virtual server 'desk' created.")
    assert "/servers/desk/mcp" in driver.find_element(_by("TAG_NAME"), "main").text
    submit(driver, "form[action='/admin/servers/desk/remove']")
    wait_for(driver, ".notice.ok", "Virtual server 'desk' removed.")

    # A managed token, shown once.
    load(driver, f"{gateway_url}/admin/tokens", "07-tokens")
    fill(driver, "input[name=name]", "ci-pipeline")
    fill(driver, "input[name=scopes]", "metrics")
    submit(driver, "form[action='/admin/tokens']")
    issued = wait_for(driver, "#issued-token")
    assert issued.text.count(".") == 2  # a JWT
    screenshot(driver, "08-token-issued")
    assert console_errors(driver) == []

    # Every other page, clean.
    health = load(driver, f"{gateway_url}/admin/health", "09-health")
    assert "upstreams up" in health and "gateway_tool_call" in health
    load(driver, f"{gateway_url}/admin/upstreams", "10-upstreams-after")

    # Sign out: the pages are closed again.
    driver.find_element(_by("CSS_SELECTOR"), "form[action='/admin/signout'] button").click()
    wait_for(driver, ".notice.ok", "Signed out.")
    load(driver, f"{gateway_url}/admin/health", "11-signed-out")
    assert driver.current_url.endswith("/admin/signin")


def test_a_form_posted_from_another_site_is_refused_in_chromium(
    browser: Any, gateway_url: str, tmp_path: Path
) -> None:
    """A page elsewhere that posts to the UI: the browser sends the session cookie no
    more (SameSite=Strict) and the gateway refuses the form (no CSRF token)."""
    driver = browser
    load(driver, f"{gateway_url}/admin/signin", "12-sign-in-again")
    fill(driver, "textarea[name=token]", ADMIN_TOKEN)
    submit(driver, "form[action='/admin/signin']")
    wait_for(driver, ".notice.ok", "Signed in as operator.")
    attack = tmp_path / "attack.html"
    attack.write_text(
        f'<form method="post" action="{gateway_url}/admin/servers">'
        '<input name="id" value="evil"><button id="go" type="submit">go</button></form>'
    )
    driver.get(attack.as_uri())
    driver.find_element(_by("ID"), "go").click()
    wait_for(driver, "h1", "Form refused")
    screenshot(driver, "13-cross-site-refused")
    (refused,) = console_errors(driver)
    assert "/admin/servers" in refused and "status of 403" in refused
    text = load(driver, f"{gateway_url}/admin/servers", "14-servers-untouched")
    assert "evil" not in text
