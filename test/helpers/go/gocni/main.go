// gocni drives CNI plugins through containerd's go-cni exactly as containerd 1.6's CRI plugin does
// for a pod sandbox (pkg/cri/server: the CNI init in service.go, cniNamespaceOpts, toCNILabels,
// toCNIPortMappings, toCNIBandWidth, toCNIDNS in sandbox_run.go), so that a test sees what a
// Kubernetes node sends: go-cni's capability structs serialized with their Go field names.
//
//	gocni -verb setup|check|remove -conf-dir DIR [-conflist FILE] -plugin-dirs D1:D2 < pod.json
//
// pod.json is the part of a CRI PodSandboxConfig the network setup reads, plus the sandbox id and
// network namespace path:
//
//	{"id": "...", "netns": "/run/netns/x",
//	 "metadata": {"name": "web", "namespace": "default", "uid": "..."},
//	 "portMappings": [{"protocol": "TCP", "containerPort": 80, "hostPort": 8080, "hostIp": ""}],
//	 "annotations": {"kubernetes.io/ingress-bandwidth": "1M", "kubernetes.io/egress-bandwidth": "2M"},
//	 "dnsConfig": {"servers": ["10.0.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]}}
//
// Networks are loaded as the CRI plugin loads them (cni.WithLoNetwork, then cni.WithDefaultConf:
// the first configuration of -conf-dir, interface eth0), or from one file with -conflist
// (cni.WithConfListFile). On setup, go-cni's Result is printed as JSON on stdout; errors go to
// stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cni "github.com/containerd/go-cni"
)

type portMapping struct {
	Protocol      string `json:"protocol"`
	ContainerPort int32  `json:"containerPort"`
	HostPort      int32  `json:"hostPort"`
	HostIP        string `json:"hostIp"`
}

type pod struct {
	ID       string `json:"id"`
	Netns    string `json:"netns"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	PortMappings []portMapping     `json:"portMappings"`
	Annotations  map[string]string `json:"annotations"`
	DNSConfig    *struct {
		Servers  []string `json:"servers"`
		Searches []string `json:"searches"`
		Options  []string `json:"options"`
	} `json:"dnsConfig"`
}

// The CRI plugin's pod annotations capability (annotations.PodAnnotations).
const podAnnotations = "io.kubernetes.cri.pod-annotations"

// toCNILabels: the CNI_ARGS of a pod.
func toCNILabels(p *pod) map[string]string {
	return map[string]string{
		"K8S_POD_NAMESPACE":          p.Metadata.Namespace,
		"K8S_POD_NAME":               p.Metadata.Name,
		"K8S_POD_INFRA_CONTAINER_ID": p.ID,
		"K8S_POD_UID":                p.Metadata.UID,
		"IgnoreUnknown":              "1",
	}
}

// toCNIPortMappings: mappings without a host port are skipped, protocols lower-cased.
func toCNIPortMappings(in []portMapping) []cni.PortMapping {
	var out []cni.PortMapping
	for _, m := range in {
		if m.HostPort <= 0 {
			continue
		}
		out = append(out, cni.PortMapping{HostPort: m.HostPort, ContainerPort: m.ContainerPort, Protocol: strings.ToLower(m.Protocol), HostIP: m.HostIP})
	}
	return out
}

// parseQuantity reads a Kubernetes resource quantity with a decimal SI or binary suffix ("1M",
// "1.5G", "100Ki", "2e6"), rounded up to an integer as resource.Quantity.Value() does. Enough for
// bandwidth annotations (k8s.io/apimachinery is not packaged offline).
func parseQuantity(s string) (int64, error) {
	mult := map[string]float64{"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
	num := strings.TrimRight(s, "kMGTPEi")
	m, ok := mult[s[len(num):]]
	if !ok || num == "" {
		return 0, fmt.Errorf("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid quantity %q: %v", s, err)
	}
	return int64(math.Ceil(f * m)), nil
}

// bandwidth.ExtractPodBandwidthResources with validateBandwidthIsReasonable (1k..1P).
func podBandwidth(ann map[string]string, key string) (*int64, error) {
	s, ok := ann[key]
	if !ok {
		return nil, nil
	}
	v, err := parseQuantity(s)
	if err != nil {
		return nil, err
	}
	if v < 1000 {
		return nil, fmt.Errorf("resource is unreasonably small (< 1kbit)")
	}
	if v > 1e15 {
		return nil, fmt.Errorf("resource is unreasonably large (> 1Pbit)")
	}
	return &v, nil
}

// toCNIBandWidth: the CRI plugin sets each burst to math.MaxUint32 bits.
func toCNIBandWidth(ann map[string]string) (*cni.BandWidth, error) {
	ingress, err := podBandwidth(ann, "kubernetes.io/ingress-bandwidth")
	if err != nil {
		return nil, fmt.Errorf("reading pod bandwidth annotations: %w", err)
	}
	egress, err := podBandwidth(ann, "kubernetes.io/egress-bandwidth")
	if err != nil {
		return nil, fmt.Errorf("reading pod bandwidth annotations: %w", err)
	}
	if ingress == nil && egress == nil {
		return nil, nil
	}
	bw := &cni.BandWidth{}
	if ingress != nil {
		bw.IngressRate = uint64(*ingress)
		bw.IngressBurst = math.MaxUint32
	}
	if egress != nil {
		bw.EgressRate = uint64(*egress)
		bw.EgressBurst = math.MaxUint32
	}
	return bw, nil
}

// cniNamespaceOpts, as the CRI plugin builds them for Setup and Remove.
func cniNamespaceOpts(p *pod) ([]cni.NamespaceOpts, error) {
	opts := []cni.NamespaceOpts{
		cni.WithLabels(toCNILabels(p)),
		cni.WithCapability(podAnnotations, p.Annotations),
	}
	if pm := toCNIPortMappings(p.PortMappings); len(pm) > 0 {
		opts = append(opts, cni.WithCapabilityPortMap(pm))
	}
	bw, err := toCNIBandWidth(p.Annotations)
	if err != nil {
		return nil, err
	}
	if bw != nil {
		opts = append(opts, cni.WithCapabilityBandWidth(*bw))
	}
	if d := p.DNSConfig; d != nil {
		opts = append(opts, cni.WithCapabilityDNS(cni.DNS{Servers: d.Servers, Searches: d.Searches, Options: d.Options}))
	}
	return opts, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gocni:", err)
		os.Exit(1)
	}
}

func run() error {
	var verb, confDir, conflist, pluginDirs string
	for i := 1; i+1 < len(os.Args); i += 2 {
		switch os.Args[i] {
		case "-verb":
			verb = os.Args[i+1]
		case "-conf-dir":
			confDir = os.Args[i+1]
		case "-conflist":
			conflist = os.Args[i+1]
		case "-plugin-dirs":
			pluginDirs = os.Args[i+1]
		default:
			return fmt.Errorf("unknown flag %s", os.Args[i])
		}
	}
	var p pod
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		return fmt.Errorf("pod on stdin: %w", err)
	}
	if p.ID == "" || p.Netns == "" {
		return errors.New("pod on stdin: id and netns are required")
	}
	// The CRI plugin: cni.New(WithMinNetworkCount(2), WithPluginConfDir, WithPluginMaxConfNum(1),
	// WithPluginDir), then Load(WithLoNetwork, WithDefaultConf). go-cni checks every network, and
	// its loopback network is CNI 0.3.1, which has no CHECK (the CRI plugin never calls Check):
	// check loads the pod network alone.
	networks, lo := 2, []cni.Opt{cni.WithLoNetwork}
	if verb == "check" {
		networks, lo = 1, nil
	}
	c, err := cni.New(
		cni.WithMinNetworkCount(networks),
		cni.WithPluginConfDir(confDir),
		cni.WithPluginMaxConfNum(1),
		cni.WithPluginDir(filepath.SplitList(pluginDirs)),
		cni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		return fmt.Errorf("initialize cni: %w", err)
	}
	load := append(lo, cni.WithDefaultConf)
	if conflist != "" {
		load = append([]cni.Opt{cni.WithConfListFile(conflist)}, lo...)
	}
	if err := c.Load(load...); err != nil {
		return err
	}
	opts, err := cniNamespaceOpts(&p)
	if err != nil {
		return fmt.Errorf("get cni namespace options: %w", err)
	}
	ctx := context.Background()
	switch verb {
	case "setup":
		result, err := c.Setup(ctx, p.ID, p.Netns, opts...)
		if err != nil {
			return fmt.Errorf("failed to setup network for sandbox %q: %w", p.ID, err)
		}
		return json.NewEncoder(os.Stdout).Encode(result)
	case "check":
		return c.Check(ctx, p.ID, p.Netns, opts...)
	case "remove":
		if err := c.Remove(ctx, p.ID, p.Netns, opts...); err != nil {
			return fmt.Errorf("failed to destroy network for sandbox %q: %w", p.ID, err)
		}
		return nil
	default:
		return fmt.Errorf("-verb must be setup, check or remove, got %q", verb)
	}
}
