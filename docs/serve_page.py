"""The server's page in a real browser: start the server, load `/` in headless Chromium, upload
an image, wait for the overlay and the legend, save a screenshot (`docs/serve_page.png`).

    .venv/bin/python docs/serve_page.py                  # the demo's export and a val image
    .venv/bin/python docs/serve_page.py --model exports/deeplab --image a.jpg --output page.png

Needs Debian's Chromium and its driver, which match each other's version
(`apt-get install -y chromium chromium-driver`), and Selenium (`pip install selenium`). Selenium
rather than Playwright: Playwright drives a Chromium build of its own and is 53 MB; Selenium
talks to the Chromium that is installed through its own `chromedriver`. Neither is in
`requirements.lock`: only this script uses them, not the tests.

The browser starts with a fresh profile and without any network service of its own (no
sync, no component updates, no QUIC); the page fetches nothing but the server's `/segment`.
The script prints the legend the page shows and the path of the screenshot; the exit status is
1 when the page shows an error or no legend within `--timeout` seconds.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_EXPORT = os.path.join(REPO, "demo_output", "export")
DEMO_VAL = os.path.join(REPO, "demo_output", "synthetic", "VOCdevkit", "VOC2012")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def demo_image():
    """The first val image of the demo's synthetic VOC set."""
    with open(os.path.join(DEMO_VAL, "ImageSets", "Segmentation", "val.txt")) as f:
        first = f.read().split()[0]
    return os.path.join(DEMO_VAL, "JPEGImages", f"{first}.jpg")


def start_server(model, name, folder):
    out_path = os.path.join(folder, "server.out")
    with open(out_path, "w") as out, open(os.path.join(folder, "server.err"), "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "deeplab_family.serve", "--model", model, "--port", "0",
             "--model-name", name],
            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=out, stderr=err)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with open(out_path) as f:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", f.read())
        if found:
            return process, found[1]
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    with open(os.path.join(folder, "server.err")) as f:
        raise SystemExit(f"the server did not start:\n{f.read()[-3000:]}")


def screenshot(url, image, output, args, profile):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        raise SystemExit("this script needs Selenium: pip install selenium") from None
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,820"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=args.chromedriver))
    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "file").send_keys(os.path.abspath(image))

        def done(d):
            if d.find_element(By.ID, "error").is_displayed():
                return "error"
            rows = d.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
            loaded = d.execute_script(
                "const i = document.getElementById('overlay'); return i.complete && "
                "i.naturalWidth > 0;")
            return "ok" if rows and loaded else False

        state = WebDriverWait(driver, args.timeout).until(done)
        status = driver.find_element(By.ID, "status").text
        legend = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#legend tbody tr")]
        error = driver.find_element(By.ID, "error").text
        # The whole page, without a scrollbar: the window grown to the document's height.
        height, chrome = driver.execute_script(
            "return [document.documentElement.scrollHeight, "
            "window.outerHeight - window.innerHeight];")
        driver.set_window_size(1400, height + chrome)
        driver.save_screenshot(output)
        return state, status, legend, error
    finally:
        driver.quit()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEMO_EXPORT, help="export base (the demo's)")
    parser.add_argument("--model-name", default="deeplab_demo", help="the name it is served as")
    parser.add_argument("--image", default=None, help="image to upload (a demo val image)")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "serve_page.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    image = args.image or demo_image()
    for path, what in [(args.chromium, "Chromium"), (args.chromedriver, "chromedriver")]:
        if not os.path.exists(path):
            raise SystemExit(f"no {what} at {path}: apt-get install -y chromium chromium-driver")
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(args.model, args.model_name, folder)
        try:
            state, status, legend, error = screenshot(url, image, args.output, args,
                                                      os.path.join(folder, "profile"))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    print(f"page: {status or error}")
    for row in legend:
        print(f"  {row}")
    print(f"screenshot: {args.output}")
    return 0 if state == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
