"""shadowproxy as a plain mitmproxy script:

mitmdump -s addons/shadow.py --mode reverse:LIVE_URL --set shadow_url=SHADOW_URL --set shadow_rules=FILE
"""

from shadowproxy.proxy.addon import ShadowAddon

addons = [ShadowAddon()]
