// Command cluster runs a small but real Kubernetes control plane in one
// process, for tests: embedded etcd, kube-apiserver and
// kube-controller-manager (all from k8s.io/kubernetes v1.34), one or more
// fake nodes and a tiny binder that assigns pods to them. Kubelet behaviour
// (pods Running/Ready/Succeeded) is simulated by kwok, a separate binary
// started by devcluster.py.
//
// Usage: cluster -dir STATE_DIR [-port N] [-nodes N]
//
// It writes STATE_DIR/admin.kubeconfig, then STATE_DIR/ready once the
// apiserver is ready and the controllers have created the default
// ServiceAccount, and exits cleanly on SIGTERM/SIGINT.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	kcapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	logsapi "k8s.io/component-base/logs/api/v1"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// The apiserver and the controller-manager each apply the (identical)
// logging configuration; by default the second call is an error.
func init() { logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged }

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// freePort asks the kernel for an unused loopback port.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}
}

func main() {
	fs := flag.NewFlagSet("cluster", flag.ExitOnError)
	dirFlag := fs.String("dir", "", "state directory (kubeconfig, certs, etcd data); required")
	port := fs.Int("port", 0, "apiserver port on 127.0.0.1 (0: pick a free one)")
	nodes := fs.Int("nodes", 1, "number of fake (kwok) nodes")
	must(fs.Parse(os.Args[1:]))
	if *dirFlag == "" {
		fs.Usage()
		os.Exit(2)
	}
	dir, err := filepath.Abs(*dirFlag)
	must(err)
	must(os.MkdirAll(dir, 0o700))
	p := func(name string) string { return filepath.Join(dir, name) }
	_ = os.Remove(p("ready"))
	if *port == 0 {
		*port = freePort()
	}

	// 1. etcd, embedded, loopback only, no fsync (test data is throwaway).
	ec := embed.NewConfig()
	ec.Dir, ec.UnsafeNoFsync, ec.LogLevel = p("etcd"), true, "error"
	cu, pu := loopbackURL(freePort()), loopbackURL(freePort())
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	etcd, err := embed.StartEtcd(ec)
	must(err)
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		must(fmt.Errorf("etcd did not become ready"))
	}

	// 2. Credentials: a self-signed serving cert (leaf + CA), one EC key to
	// sign and verify ServiceAccount tokens, and a static admin token.
	crt, key, err := certutil.GenerateSelfSignedCertKey("127.0.0.1",
		[]net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	must(err)
	saKey, err := keyutil.MakeEllipticPrivateKeyPEM()
	must(err)
	token, nodeToken := randomToken(), randomToken()
	for name, data := range map[string][]byte{
		"tls.crt": crt, "tls.key": key, "sa.key": saKey,
		// admin for everything; a kubelet-like identity for kwok-node-0 so
		// tests can exercise the Node authorizer (kwok itself uses admin).
		"tokens.csv": []byte(token + `,admin,admin,"system:masters"` + "\n" +
			nodeToken + `,system:node:kwok-node-0,kwok-node-0,"system:nodes"` + "\n"),
		"node-token": []byte(nodeToken),
	} {
		must(os.WriteFile(p(name), data, 0o600))
	}

	// The controller-manager command must be built before the apiserver's:
	// its flag setup flips the WatchListClient feature gate default, which
	// panics once the (shared, global) feature gates were added to a flag set.
	cm := kcm.NewControllerManagerCommand()

	// 3. kube-apiserver, via its cobra command so we use exactly the flags a
	// real cluster would. NewAPIServerCommand installs the process's only
	// signal handler: SIGTERM cancels its context and Execute returns.
	api := apiserver.NewAPIServerCommand()
	api.SetArgs([]string{
		"--etcd-servers=" + cu.String(),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(*port),
		"--tls-cert-file=" + p("tls.crt"), "--tls-private-key-file=" + p("tls.key"),
		"--token-auth-file=" + p("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction", // as kubeadm does; pairs with the Node authorizer
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + p("sa.key"),
		"--service-account-signing-key-file=" + p("sa.key"),
		// The endpoints reconciler refuses a loopback advertise address.
		"--endpoint-reconciler-type=none",
		// Shut down fast: no delay, and a 2s (not 60s) HTTP server shutdown
		// timeout, which otherwise waits for the in-process KCM's watches.
		"--shutdown-delay-duration=0s",
		"--shutdown-send-retry-after=true",
	})
	ctx := api.Context() // cancelled on SIGTERM/SIGINT
	apiDone := make(chan error, 1)
	go func() { apiDone <- api.Execute() }()

	// 4. Admin kubeconfig (token auth, CA = the self-signed chain).
	server := "https://127.0.0.1:" + strconv.Itoa(*port)
	kc := kcapi.NewConfig()
	kc.Clusters["tuneops-test"] = &kcapi.Cluster{Server: server, CertificateAuthorityData: crt}
	kc.AuthInfos["admin"] = &kcapi.AuthInfo{Token: token}
	kc.Contexts["tuneops-test"] = &kcapi.Context{Cluster: "tuneops-test", AuthInfo: "admin", Namespace: "default"}
	kc.CurrentContext = "tuneops-test"
	must(clientcmd.WriteToFile(*kc, p("admin.kubeconfig")))
	rc, err := clientcmd.BuildConfigFromFlags("", p("admin.kubeconfig"))
	must(err)
	rc.QPS, rc.Burst = 100, 200
	cs := kubernetes.NewForConfigOrDie(rc)

	go func() {
		// Backstop: exit even if the graceful shutdown hangs.
		<-ctx.Done()
		time.Sleep(20 * time.Second)
		fmt.Fprintln(os.Stderr, "cluster: apiserver shutdown timed out, exiting")
		etcd.Close()
		os.Exit(0)
	}()
	go func() {
		// Whatever happens, stop etcd and exit when the apiserver stops.
		err := <-apiDone
		etcd.Close()
		must(err)
		fmt.Println("cluster: stopped")
		os.Exit(0)
	}()

	waitFor("apiserver /readyz", 120*time.Second, func() bool {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil
	})

	// 5. Fake nodes, managed (status, heartbeats) by kwok.
	var nodeNames []string
	for i := 0; i < *nodes; i++ {
		name := fmt.Sprintf("kwok-node-%d", i)
		nodeNames = append(nodeNames, name)
		must(createNode(ctx, cs, name))
	}

	// 6. kube-controller-manager, in-process. Its RunE uses
	// context.Background(), so it simply dies with the process. Port 0
	// disables its own HTTPS endpoint (and thus delegated authn/authz).
	cm.SetArgs([]string{
		"--kubeconfig=" + p("admin.kubeconfig"),
		"--leader-elect=false",
		"--controllers=*", // job, deployment, replicaset, garbage-collector, namespace, serviceaccount(-token), hpa, ...
		"--secure-port=0",
		"--service-account-private-key-file=" + p("sa.key"),
		"--root-ca-file=" + p("tls.crt"),
		// All controllers use the admin kubeconfig (no per-controller SAs).
		"--use-service-account-credentials=false",
		// More GC workers: tests delete many owners at once.
		"--concurrent-gc-syncs=10",
	})
	go func() {
		err := cm.Execute()
		must(fmt.Errorf("kube-controller-manager exited: %v", err))
	}()

	// Pods can only be created once the ServiceAccount controller has made
	// the "default" ServiceAccount, so that is our readiness signal.
	waitFor("default ServiceAccount", 120*time.Second, func() bool {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})

	must(os.WriteFile(p("ready"), []byte(server+"\n"), 0o600))
	fmt.Printf("cluster: ready at %s, KUBECONFIG=%s\n", server, p("admin.kubeconfig"))

	bind(ctx, cs, nodeNames)
	<-make(chan struct{}) // wait for the apiserver goroutine to exit the process
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func waitFor(what string, timeout time.Duration, ok func() bool) {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			must(fmt.Errorf("timed out waiting for %s", what))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func createNode(ctx context.Context, cs kubernetes.Interface, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
		"nvidia.com/gpu":      resource.MustParse("8"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
				"kubernetes.io/arch": "amd64", "type": "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// bind is a minimal scheduler: every pod without spec.nodeName is bound to a
// fake node, round-robin. It ignores taints, selectors and requests; kwok
// only acts on pods that have a node. Returns when ctx is cancelled.
func bind(ctx context.Context, cs kubernetes.Interface, nodes []string) {
	next := 0
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName="})
		if err == nil {
			for _, pod := range pods.Items {
				if pod.DeletionTimestamp != nil {
					continue
				}
				node := nodes[next%len(nodes)]
				next++
				_ = cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
					Target:     corev1.ObjectReference{Kind: "Node", Name: node},
				}, metav1.CreateOptions{})
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}
