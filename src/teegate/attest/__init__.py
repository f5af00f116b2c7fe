"""Pure attestation verification: evidence bytes + collateral + policy + now -> Verdict.

Nothing in this package touches the network, the disk or the clock; collateral and ``now``
are parameters.
"""

from teegate.attest.policy import Policy, load_policy
from teegate.attest.verdict import Check, CheckList, Verdict

__all__ = ["Check", "CheckList", "Policy", "Verdict", "load_policy"]
