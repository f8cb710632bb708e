"""Signing in and out: the key lives in the tab's sessionStorage only while signed in."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import Browser
from tests.e2e.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_sign_out_forgets_the_key(browser: Browser, project: Service) -> None:
    browser.sign_in(project.api_key)
    assert list(browser.session_storage().values()) == [project.api_key]
    browser.find("#jobs")
    browser.shot("signed-in")

    browser.find("#sign-out").click()
    browser.wait(lambda: browser.find("#sign-in").is_displayed(), "the sign-in form")
    assert browser.session_storage() == {}
    assert not browser.find("#nav").is_displayed()
    browser.shot("signed-out")


def test_a_wrong_key_shows_the_api_error(browser: Browser, project: Service) -> None:
    browser.expect_console_error(r"/v1/jobs\?limit=1 .*status of 401")
    browser.open()
    browser.find("#api-key").send_keys(project.api_key[:-4] + "XXXX")
    browser.find("#sign-in [type=submit]").click()

    code = browser.wait(lambda: browser.find("#sign-in-error .code").text, "the sign-in error")
    assert code == "invalid_api_key"
    assert browser.session_storage() == {}
    assert not browser.find("#nav").is_displayed()
    browser.shot("wrong-key")
