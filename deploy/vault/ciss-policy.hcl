# The least-privileged Vault policy for CISS's own AppRole (see README.md here).
# CISS only ever touches paths derived from a tenant and a validated name:
#   auth methods   auth/ciss/<tenant>/<name>      (enabled through sys/auth/ciss/...)
#   policies       sys/policies/acl/ciss.<tenant>.<name>
#   namespaces     sys/namespaces/<name> under the tenant's parent namespace
# The tests in workers/internal/vaultaction run every action with a token from
# this policy (not root), so it is proven sufficient.

# Enable, read and disable auth methods under ciss/ only (sudo is required by sys/auth).
path "sys/auth/ciss/*" {
  capabilities = ["create", "read", "update", "delete", "sudo"]
}

# Configure those methods and manage their roles.
path "auth/ciss/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Tenant policies, by name prefix.
path "sys/policies/acl/ciss.*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Namespace detection (Vault Community Edition answers "unsupported path") and,
# on Vault Enterprise or OpenBao, tenants' namespaces. Inside a child namespace
# CISS needs the same rights as above for the baseline policy and admin role;
# grant them in the parent namespace's copy of this policy (see README.md).
path "sys/namespaces" {
  capabilities = ["list"]
}
path "sys/namespaces/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Its own token: renew and look up (also in Vault's default policy).
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
