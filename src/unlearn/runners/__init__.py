"""The runners: config -> data + model -> methods -> evaluation -> report files.

One per part: vision (`run`/`compare`/`fit`), audit, language models, diffusion.
"""
