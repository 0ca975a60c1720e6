"""Image-Free Studio engine: everything that computes or stores. Imports no gradio."""
