// Command kube-apiserver is the upstream Kubernetes API server, built from the Go module proxy
// for the integration tests (scripts/kube-up.sh builds it once and caches it). Nothing is added
// or changed: this file only calls the command's own entry point, as
// k8s.io/kubernetes/cmd/kube-apiserver does.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
