"""Image-Free Studio: ``python app.py`` starts the Gradio studio (also the Hugging Face Space's
entry point). Settings come from ``IFS_*`` environment variables (README, "Settings" -> "Studio")."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from studio.layout import launch  # noqa: E402

if __name__ == "__main__":
    launch()
