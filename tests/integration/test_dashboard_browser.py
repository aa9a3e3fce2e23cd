"""The dashboard in a real headless Chromium against a live server and a run trained through
the SDK: sign-in, live loss curve, checkpoint download, streamed chat, compare, isolation.

Every test saves a screenshot (tmp/screenshots/) and fails on browser console errors.
`FRONTIER_SIGNAL_UPDATE_SCREENSHOT=1` also writes the run page to docs/img/dashboard-run.png.
"""

from __future__ import annotations

import os
import tarfile

import pytest

from frontier_signal import SignalClient
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.browser import (
    ROOT,
    console_errors,
    screenshot,
    start_browser,
    stop_browser,
    wait_for,
)

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

TEXT = {"text": "The capital of Zorbia is Quellmar."}
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "dashboard-run.png"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chrome(downloads):
    browser = start_browser(downloads)
    yield browser
    stop_browser(browser)


@pytest.fixture(scope="module")
def sdk(base_url, alice):
    with SignalClient(alice, base_url) as client:
        yield client


@pytest.fixture(scope="module")
def trained(sdk):
    """A run trained 4 steps through the SDK (the server checkpoints every 2 steps)."""
    run = sdk.create_run(base_model=TINY, lora_r=4, seed=5, learning_rate=1e-2)
    with sdk.training(run.run_id) as training:
        training.train_epoch([[TEXT]] * 4, progress=False)
    return run.run_id


def by_css(chrome, selector):
    from selenium.webdriver.common.by import By

    return chrome.find_element(By.CSS_SELECTOR, selector)


def sign_in(chrome, base_url, key):
    from selenium.webdriver.common.keys import Keys

    # Forget the last key on a same-origin page that runs no script (no poll sees it go).
    chrome.get(base_url + "/dashboard/static/vendor/LICENSE-uPlot.txt")
    chrome.execute_script("sessionStorage.clear()")
    chrome.get(base_url + "/")
    field = wait_for(lambda: by_css(chrome, "#api-key"), what="the sign-in form")
    field.send_keys(key, Keys.ENTER)  # the key field has focus: keyboard only


def check_console(chrome, *allowed):
    assert console_errors(chrome, allowed) == []


def test_a_wrong_key_shows_an_error_not_a_blank_page(chrome, base_url, trained):
    sign_in(chrome, base_url, "sk-fs-not-a-real-key")
    error = wait_for(lambda: by_css(chrome, "#signin-error").text, what="the sign-in error")
    assert "refused" in error and "invalid API key" in error
    screenshot(chrome, "wrong-key")
    check_console(chrome)  # the key check answers 200 {"signed_in": false}: no console error


def test_sign_in_lists_the_run_trained_through_the_sdk(chrome, base_url, alice, trained):
    sign_in(chrome, base_url, alice)
    row = wait_for(lambda: by_css(chrome, f'tr[data-run="{trained}"]'), what="the run's row")
    cells = [cell.text for cell in row.find_elements("css selector", "td")]
    assert cells[1] == "signal" and cells[2] == TINY and cells[3] == "4" and cells[4] == "4"
    assert float(cells[5]) > 0 and float(cells[6]) > 0  # last loss, tokens/s
    by_css(chrome, "#runs-filter").send_keys("no-such-run")
    wait_for(lambda: "No run matches" in by_css(chrome, "#runs-table").text, what="filtering")
    screenshot(chrome, "runs")
    check_console(chrome)


def test_the_loss_curve_has_one_point_per_step_and_grows_while_training_goes_on(
    chrome, base_url, alice, sdk, trained
):
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.get(f"{base_url}/#/run/{trained}")
    loss = wait_for(lambda: by_css(chrome, "#chart-loss"), what="the loss chart")
    wait_for(lambda: loss.get_attribute("data-steps") == "1,2,3,4", what="4 points")
    with sdk.training(trained) as training:
        training.train_epoch([[TEXT]] * 2, progress=False)
    wait_for(lambda: loss.get_attribute("data-steps") == "1,2,3,4,5,6", what="6 points")
    for name in ("grad_norm", "learning_rate", "tokens_per_s"):
        assert by_css(chrome, f"#chart-{name}").get_attribute("data-points") == "6"
    wait_for(lambda: "step 6" in by_css(chrome, "#run-summary").text, what="the summary")
    wait_for(lambda: "optim_step" in by_css(chrome, "#requests").text, what="the requests")
    assert '"lora_r": 4' in by_css(chrome, "#run-config").text
    path = screenshot(chrome, "run")
    if os.environ.get("FRONTIER_SIGNAL_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        DOCS_SCREENSHOT.write_bytes(path.read_bytes())
    check_console(chrome)


def test_the_run_page_fits_a_phone(chrome, base_url, alice, trained):
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.set_window_size(390, 844)
    try:
        chrome.get(f"{base_url}/#/run/{trained}")
        wait_for(lambda: by_css(chrome, "#chart-loss").get_attribute("data-points") != "0")
        overflow = chrome.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0  # wide tables scroll inside their own box
        screenshot(chrome, "run-phone")
    finally:
        chrome.set_window_size(1366, 900)
    check_console(chrome)


def test_a_checkpoint_downloads_as_a_peft_folder_archive(
    chrome, base_url, alice, trained, downloads
):
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.get(f"{base_url}/#/run/{trained}")
    button = wait_for(lambda: by_css(chrome, "#checkpoints button[data-download]"))
    checkpoint_id = button.get_attribute("data-download")
    button.click()
    wait_for(lambda: button.get_attribute("data-downloaded"), what="the download")
    archive = downloads / f"{trained}-{checkpoint_id}.tar.gz"
    wait_for(archive.exists, what=f"{archive.name} on disk")
    wait_for(lambda: int(button.get_attribute("data-downloaded")) == archive.stat().st_size)
    with tarfile.open(archive) as tar:
        names = {name.rsplit("/", 1)[-1] for name in tar.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    screenshot(chrome, "download")
    check_console(chrome)


def _send(chrome, text):
    prompt = by_css(chrome, "#prompt")
    prompt.send_keys(text)
    max_tokens = by_css(chrome, "#max_tokens")
    max_tokens.clear()
    max_tokens.send_keys("12")
    by_css(chrome, "#send").click()


def test_chatting_with_the_run_in_the_playground_streams_text(chrome, base_url, alice, trained):
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.get(f"{base_url}/#/playground/{trained}")
    picker = wait_for(lambda: by_css(chrome, "#model-0"), what="the playground")
    assert picker.get_attribute("value") == trained
    _send(chrome, "What is the capital of Zorbia?")
    output = by_css(chrome, "#output-0")
    wait_for(lambda: output.get_attribute("data-done") == "true", 120, "the answer")
    assert int(output.get_attribute("data-chunks")) >= 2  # streamed, not one block
    answer = output.find_element("css selector", ".assistant").text
    assert answer.strip()
    screenshot(chrome, "playground")
    check_console(chrome)


def test_compare_two_checkpoints_side_by_side(chrome, base_url, alice, sdk, trained):
    from selenium.webdriver.support.ui import Select

    checkpoints = [c["checkpoint_id"] for c in sdk.list_checkpoints(trained)][:2]
    assert len(checkpoints) == 2  # the automatic ones of steps 2 and 4
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.get(f"{base_url}/#/playground")
    wait_for(lambda: by_css(chrome, "#model-0"), what="the playground")
    by_css(chrome, "#compare").click()  # shows the second model's pane
    for index, checkpoint_id in enumerate(checkpoints):
        Select(by_css(chrome, f"#model-{index}")).select_by_value(f"{trained}:{checkpoint_id}")
    _send(chrome, "Name a colour.")
    outputs = [by_css(chrome, f"#output-{index}") for index in (0, 1)]
    for output in outputs:
        wait_for(lambda o=output: o.get_attribute("data-done") == "true", 120, "both answers")
        assert int(output.get_attribute("data-chunks")) >= 1
        assert not output.find_elements("css selector", ".error")
    screenshot(chrome, "compare")
    check_console(chrome)


def test_the_queue_page_shows_the_engine_worker(chrome, base_url, alice, trained):
    sign_in(chrome, base_url, alice)
    wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    chrome.get(f"{base_url}/#/queue")
    wait_for(lambda: "1 engine worker" in by_css(chrome, "main").text, what="the queue")
    assert by_css(chrome, "#queue-running") and by_css(chrome, "#queue-pending")
    screenshot(chrome, "queue")
    check_console(chrome)


def test_another_tenants_key_sees_none_of_it(chrome, base_url, bob, trained):
    sign_in(chrome, base_url, bob)
    table = wait_for(lambda: by_css(chrome, "#runs-table"), what="the runs page")
    wait_for(lambda: "No runs yet" in table.text, what="an empty list")
    assert trained not in table.text
    chrome.get(f"{base_url}/#/playground")
    picker = wait_for(lambda: by_css(chrome, "#model-0"), what="the playground")
    assert trained not in picker.get_attribute("innerHTML")
    chrome.get(f"{base_url}/#/run/{trained}")
    wait_for(lambda: "does not exist or belongs to another key" in by_css(chrome, "main").text)
    screenshot(chrome, "other-tenant")
    check_console(chrome, "404")  # the refused run itself


def test_runs_sort_by_a_column_and_deleting_one_asks_first(chrome, base_url, alice, sdk, trained):
    doomed = sdk.create_run(base_model=TINY, lora_r=4, seed=9).run_id
    sign_in(chrome, base_url, alice)
    button = wait_for(lambda: by_css(chrome, f'button[data-delete="{doomed}"]'))

    def first_run():
        return by_css(chrome, "#runs-table tbody tr").get_attribute("data-run")

    by_css(chrome, 'button[data-sort="step"]').click()  # numbers sort high to low first
    assert first_run() == trained
    by_css(chrome, 'button[data-sort="step"]').click()
    assert first_run() == doomed  # step 0
    assert by_css(chrome, 'th[aria-sort="ascending"]').text.startswith("Step")
    button = by_css(chrome, f'button[data-delete="{doomed}"]')
    button.click()
    chrome.switch_to.alert.dismiss()  # "no": nothing happens
    assert doomed in [run["run_id"] for run in sdk.list_runs()]
    button.click()
    assert doomed in chrome.switch_to.alert.text
    chrome.switch_to.alert.accept()
    wait_for(lambda: not chrome.find_elements("css selector", f'tr[data-run="{doomed}"]'))
    assert doomed not in [run["run_id"] for run in sdk.list_runs()]
    assert by_css(chrome, f'tr[data-run="{trained}"]')
    screenshot(chrome, "deleted")
    check_console(chrome)


def test_a_no_auth_server_needs_no_sign_in(chrome, tmp_path_factory):
    from tests.integration.conftest import server_settings
    from tests.live_server import LiveServer

    settings = server_settings(tmp_path_factory.mktemp("open-server"), no_auth=True)
    with LiveServer(settings) as open_server:
        chrome.get(open_server.base_url + "/dashboard")
        wait_for(lambda: "No runs yet" in by_css(chrome, "#runs-table").text, what="the runs")
        assert not chrome.find_elements("css selector", "#api-key")
        assert not by_css(chrome, "#sign-out").is_displayed()
        screenshot(chrome, "no-auth")
        check_console(chrome)
