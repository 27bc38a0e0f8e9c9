"""The views (one tab each) and the widgets they share.

A view is a :class:`~fer_tui.views.base.View`: it declares its tab title and key, and receives the app's
:class:`~fer_tui.state.Context` whenever it changes. ``fer_tui.app.VIEWS`` lists the tabs in order.
"""
