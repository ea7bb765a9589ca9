// Command kube-controller-manager is the upstream controller manager (the Job, ServiceAccount,
// garbage-collector and other controllers), built from the Go module proxy for the integration
// tests by scripts/kube-up.sh. It only calls the command's own entry point, as
// k8s.io/kubernetes/cmd/kube-controller-manager does.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream builds it

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
