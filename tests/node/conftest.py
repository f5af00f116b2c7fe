from tests.node.fixtures import dev_pki

__all__ = ["dev_pki"]
