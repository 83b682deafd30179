// Command validate checks kind cluster configs the way `kind create cluster
// --config` reads them: kind's own v1alpha4 types, decoded strictly (an unknown
// or misspelt field is an error, as in kind's loader), then the shape this
// project's configs must have: one control plane, and workers that each mount
// one simulated VM's root at the node plugin's --root, and the host's /dev.
//
// usage: go run . FILE...   (from kind-config/validate)
package main

import (
	"fmt"
	"os"
	"path"
	"strings"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// vmRoot is where every worker sees its own VM's root (values-kind.yaml's node.root).
const vmRoot = "/var/lib/hcsi/vm-root"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range os.Args[1:] {
		if err := validate(file); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			failed = true
			continue
		}
		fmt.Printf("%s: ok\n", file)
	}
	if failed {
		os.Exit(1)
	}
}

func validate(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var cluster v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &cluster); err != nil {
		return fmt.Errorf("not a kind v1alpha4 Cluster: %w", err)
	}
	if cluster.Kind != "Cluster" || cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("kind %q apiVersion %q: expected Cluster kind.x-k8s.io/v1alpha4", cluster.Kind, cluster.APIVersion)
	}
	v1alpha4.SetDefaultsCluster(&cluster)
	controlPlanes, workers := 0, 0
	vms := map[string]bool{}
	for i, node := range cluster.Nodes {
		where := fmt.Sprintf("nodes[%d]", i)
		for _, m := range node.ExtraMounts {
			if !path.IsAbs(m.HostPath) || !path.IsAbs(m.ContainerPath) {
				return fmt.Errorf("%s: extraMounts need absolute paths (kind expands no variables): %q -> %q", where, m.HostPath, m.ContainerPath)
			}
			switch m.Propagation {
			case "", v1alpha4.MountPropagationNone, v1alpha4.MountPropagationHostToContainer, v1alpha4.MountPropagationBidirectional:
			default:
				return fmt.Errorf("%s: unknown mount propagation %q", where, m.Propagation)
			}
		}
		switch node.Role {
		case v1alpha4.ControlPlaneRole:
			controlPlanes++
		case v1alpha4.WorkerRole:
			workers++
			vm, err := workerVM(node)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			if vms[vm] {
				return fmt.Errorf("%s: VM %s has two workers", where, vm)
			}
			vms[vm] = true
		default:
			return fmt.Errorf("%s: unknown role %q", where, node.Role)
		}
	}
	if controlPlanes != 1 {
		return fmt.Errorf("%d control-plane nodes, expected 1", controlPlanes)
	}
	if workers == 0 {
		return fmt.Errorf("no worker: one per simulated VM is expected")
	}
	return nil
}

// workerVM checks a worker's mounts and returns the VM it stands for.
func workerVM(node v1alpha4.Node) (string, error) {
	vm, hasDev := "", false
	for _, m := range node.ExtraMounts {
		switch m.ContainerPath {
		case vmRoot:
			dir, root := path.Split(strings.TrimSuffix(m.HostPath, "/"))
			parent, name := path.Split(strings.TrimSuffix(dir, "/"))
			if root != "root" || path.Base(strings.TrimSuffix(parent, "/")) != "vms" || name == "" {
				return "", fmt.Errorf("%s must come from <simulator state>/vms/<vm>/root, not %s", vmRoot, m.HostPath)
			}
			vm = name
		case "/dev":
			hasDev = m.HostPath == "/dev"
		}
	}
	if vm == "" {
		return "", fmt.Errorf("no extraMount of a simulated VM's root at %s", vmRoot)
	}
	if !hasDev {
		return "", fmt.Errorf("no extraMount of the host's /dev (hot-plugged loop devices would not appear)")
	}
	if label := node.Labels["harvester-sim/vm"]; label != vm {
		return "", fmt.Errorf("label harvester-sim/vm is %q but the mounted VM root is %s", label, vm)
	}
	return vm, nil
}
