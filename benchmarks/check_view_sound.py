"""Open `avatar3d view` in headless Chromium: the page's audio element loads the WAV served over HTTP
and seeks in it (byte ranges); no console errors.

    python benchmarks/check_view_sound.py AVATAR_DIR AUDIO [SCREENSHOT.png]
"""

import sys

from avatar3d.export._browser import Chromium, find_chromium
from avatar3d.viewer import start_viewer

v = start_viewer(sys.argv[1], sys.argv[2], port=0, size=256, log=None)
try:
    with Chromium(find_chromium(), 900, 700) as br:
        br.call("Page.navigate", url=v.url)
        dur = None
        for _ in range(120):
            br.pump(0.5)
            dur = br.evaluate(
                "(function(){var a=document.getElementById('avatar3d-audio');return a?[a.src,a.duration,a.readyState]:null})()"
            )
            if dur and dur[1] and dur[1] == dur[1]:
                break
        print("audio element:", dur)
        print(
            "seekable to 42 s:",
            br.evaluate(
                "(function(){var a=document.getElementById('avatar3d-audio');a.currentTime=42;return new Promise(function(r){a.onseeked=function(){r(a.currentTime)};setTimeout(function(){r('no seek '+a.currentTime)},5000)})})()"
            ),
        )
        br.pump(3)
        br.screenshot(sys.argv[3] if len(sys.argv) > 3 else "view_page.png")
        print("console errors:", list(br.errors))
finally:
    v.stop()
