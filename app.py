"""CNN activation explorer: what each layer of a Keras CNN responds to in an image.

    streamlit run app.py

Streamlit runs this file twice over:

* as the **page**, on every visit and rerun (``__name__ == "__main__"``, also
  under AppTest): it draws :mod:`ui.page`;
* as the **server**: ``streamlit run`` finds the ``st.App`` below and serves it.
  Its lifespan starts TensorFlow, loads the bundled model and computes the
  default view before the server takes connections, so the first visitor
  doesn't wait for them (``ui/startup.py``; ``/ready`` says a process is warm).
"""

from __future__ import annotations

import streamlit as st

if __name__ == "__main__":
    from ui.page import main

    main()
else:
    from ui.startup import lifespan, routes

    app = st.App(__file__, lifespan=lifespan, routes=routes())
