// Command kubectl is the upstream kubectl, built from the Go module proxy for machines that have
// none (at the version of the control plane beside it): scripts/kubectl.sh builds it once and
// caches it, and the deploy tests run its
// `kubectl kustomize`. Nothing is added or changed; this file only calls kubectl's own entry
// point, as k8s.io/kubernetes/cmd/kubectl does.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// RunNoErrOutput, not cli.Run: Run logs a command's error through klog, while kubectl
	// reports it itself in its usual "error: ..." form (component-base's advice for kubectl).
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
