"""The tuneops operator (kopf): reconciles FineTuneJob, ModelVersion and ModelDeployment.

Layout: pure builders/planners (`ftj_children`, `ftj_plan`, `mv`, `md_children`, `md_plan`, `meta`) decide
everything from (resource, observed children); `kube` talks to the apiserver; `reconcile` glues them;
`handlers` registers thin kopf handlers; `runtime` runs kopf with metrics and peering; `rbac` lists the
permissions. Imports `tuneops.api`, kopf and kubernetes only: never `tuneops.runtime` or the ML stack.
"""
