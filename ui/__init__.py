"""The page's pieces: one small module per concern. Everything Streamlit lives here and in app.py."""
