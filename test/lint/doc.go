// Package lint checks the deployment artefacts under deploy/ with the
// platforms' own code: the Tekton Tasks (the pipeline integration and the
// Tasks the Helm chart installs for workers) are decoded strictly into
// tektoncd/pipeline's v1 types, defaulted and validated exactly as Tekton's
// admission webhook would.
//
// It lives in the test module so that Tekton (some 300 modules) is linked by
// no component: make depcheck keeps it out of the gateway and the dispatcher.
package lint
