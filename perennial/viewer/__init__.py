"""The web viewer (``perennial view``): an avatar rendered on the server, shown in the browser.

It sits on top of the core like the command line: nothing in ``perennial`` below it
imports it. :class:`~perennial.viewer.server.Viewer` starts a viser server; each browser
tab gets a :class:`~perennial.viewer.session.TabSession` (controls, camera, playback) and
a render worker (:mod:`perennial.viewer.render_loop`) that renders only the newest view.
viser is imported only when a viewer starts (``pip install perennial-avatar[viewer]``).
"""

from perennial.viewer.config import ViewerConfig

__all__ = ["ViewerConfig"]
