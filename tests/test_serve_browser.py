#!/usr/bin/env python3
"""Headless Chromium (selenium + chromedriver) against a running `xray-dp serve`: loads the page, uploads
an image through the page's file input, and checks that the page shows the probability the caller
expects (the digits `xray-dp predict` printed), the Grad-CAM overlay and the validation figures.
Usage: test_serve_browser.py URL IMAGE EXPECTED_PROBABILITY [SCREENSHOT.png]
Prints one line per check; exit 0 when all pass, 1 otherwise."""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, image, want = sys.argv[1], sys.argv[2], sys.argv[3]
shot = sys.argv[4] if len(sys.argv) > 4 else None
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
          "--hide-scrollbars", "--force-device-scale-factor=1"):
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


try:
    drv.set_page_load_timeout(20)
    drv.get(url)
    wait = WebDriverWait(drv, 20)
    wait.until(lambda d: "sha256" in d.find_element(By.ID, "modelline").text)
    check("not a medical device" in drv.find_element(By.ID, "notice").text.lower(), "the page says 'not a medical device'")
    val = drv.find_element(By.ID, "val")
    check(val.find_elements(By.CSS_SELECTOR, "table.cm") != [] or "No validation figures" in val.text,
          "validation: a confusion matrix or a note: " + val.text.replace("\n", " ")[:120])
    drv.find_element(By.ID, "file").send_keys(image)
    wait.until(lambda d: d.find_element(By.ID, "prob").text != "" or "Refused" in d.find_element(By.ID, "status").text)
    got = drv.find_element(By.ID, "prob").text
    check(got == want, "the page shows probability %s, predict printed %s" % (got, want))
    label = drv.find_element(By.ID, "label").text
    check(label != "", "the page shows the label " + label)
    wait.until(lambda d: (d.find_element(By.ID, "cam").get_attribute("src") or "").startswith("data:image/png;base64,"))
    ok = False
    for _ in range(50):
        w = drv.execute_script("const i = document.getElementById('cam'); return i.complete ? i.naturalWidth : 0;")
        if w:
            ok = w >= 384
            break
        time.sleep(0.1)
    check(ok, "the Grad-CAM overlay is shown (%s px wide)" % w)
    errs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"] if hasattr(drv, "get_log") else []
    check(errs == [], "no errors in the browser console: %s" % errs[:2])
    if shot:
        time.sleep(0.3)
        for _ in range(2):
            h = drv.execute_script("return Math.max(document.documentElement.scrollHeight, 860);")
            drv.set_window_size(1280, h + 140)
            time.sleep(0.3)
        drv.save_screenshot(shot)
        print("screenshot: " + shot)
finally:
    drv.quit()
sys.exit(1 if fails else 0)
