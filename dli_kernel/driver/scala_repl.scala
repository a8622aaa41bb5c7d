// The JVM half of a session's Scala interpreter (see scala_repl.py, which compiles and drives it).
//
// It wraps the Scala 2.13 REPL engine (IMain) that ships with Spark, with `spark` and `sc` bound to the
// SparkSession that pyspark already started in this JVM. User code arrives as a method argument and
// results leave as JSON, so nothing is ever spliced into source text on the Python side.
package dlikernel.repl

import java.io.{ByteArrayOutputStream, OutputStream, PrintStream, PrintWriter}
import java.nio.charset.StandardCharsets.UTF_8

import scala.annotation.nowarn
import scala.collection.mutable.ArrayBuffer
import scala.jdk.CollectionConverters._
import scala.reflect.internal.util.{CodeAction, NoSourceFile, Position}
import scala.tools.nsc.Settings
import scala.tools.nsc.interpreter.{IMain, Results}
import scala.tools.nsc.interpreter.shell.{ReplCompletion, ReplReporterImpl}

import com.fasterxml.jackson.databind.ObjectMapper
import org.apache.spark.sql.SparkSession

/** A compiler message about the user's code, kept apart so Python can format it with the code line. */
final case class Problem(severity: String, line: Int, column: Int, lineContent: String, message: String)

/** A REPL reporter that records what a statement produced instead of only printing it.
  *
  * The stock reporter assumes a terminal that already shows the input line, so for one-line input it
  * prints a caret with nothing above it; we keep positions and messages and let Python lay them out.
  */
final class RecordingReporter(settings: Settings, writer: PrintWriter)
    extends ReplReporterImpl(settings, writer) {
  val problems: ArrayBuffer[Problem] = ArrayBuffer.empty
  val echo: StringBuilder = new StringBuilder
  var failure: Option[String] = None

  def clearStatement(): Unit = {
    problems.clear()
    echo.clear()
    failure = None
  }

  override def doReport(pos: Position, msg: String, severity: Severity, actions: List[CodeAction]): Unit =
    if (pos != null && pos.isDefined && pos.source != NoSourceFile && pos.source.file.name == "<console>")
      problems += Problem(severity.toString.toLowerCase, pos.line, pos.column, pos.lineContent, msg)
    else super.doReport(pos, msg, severity, actions)

  override def printResult(result: Either[String, String]): Unit = result match {
    case Right(text) => if (printResults && text.nonEmpty) echo ++= unmangleInterpreterOutput(text)
    case Left(trace) => failure = Some(unwrap(trace)) // whole: the stock reporter does not cut traces
  }
}

object Interpreter {
  val JobCancelGraceMs = 1000L

  /** The statement output of the thread running a cell, for `System.out` and `System.err`. */
  private val routed = new ThreadLocal[PrintStream]

  /** Java's own streams, so that `System.out.println` in a cell lands in its output like `println`
    * does, while every other thread (Spark's, the logger's) keeps writing to the session log.
    */
  private lazy val routeSystemStreams: Unit = {
    def router(original: PrintStream) = new PrintStream(
      new OutputStream {
        private def target = Option(routed.get).getOrElse(original)
        override def write(b: Int): Unit = target.write(b)
        override def write(b: Array[Byte], off: Int, len: Int): Unit = target.write(b, off, len)
        override def flush(): Unit = target.flush()
      },
      true,
      UTF_8
    )
    System.setOut(router(System.out))
    System.setErr(router(System.err))
  }
}

/** One session's interpreter. Cells run one at a time, each on a fresh thread that cancel can
  * interrupt and, when the code ignores interrupts, stop.
  */
final class Interpreter(outputDir: String, classpath: String, spark: SparkSession) {
  import Interpreter.{JobCancelGraceMs, routeSystemStreams, routed}

  private val out = new ByteArrayOutputStream
  private val writer = new PrintWriter(new java.io.OutputStreamWriter(out, UTF_8), true)
  private val console = new PrintStream(out, true, UTF_8)
  private val json = new ObjectMapper

  private val settings = {
    val s = new Settings(message => writer.println(message))
    // Class-based wrappers and a real output directory: closures then serialize without dragging
    // the whole REPL state along, and executors fetch the classes through spark.repl.class.uri.
    s.processArguments(List("-Yrepl-class-based", "-Yrepl-outdir", outputDir), processAll = true)
    s.usejavacp.value = true
    // The context class loader sees the session's --jars; the REPL's classes must see them too.
    s.embeddedDefaults(Thread.currentThread.getContextClassLoader)
    if (classpath.nonEmpty) s.classpath.value = classpath
    s
  }
  private val reporter = new RecordingReporter(settings, writer)
  val imain: IMain = new IMain(settings, reporter)

  @volatile private var running: Thread = null
  @volatile private var cancelled = false
  @volatile private var stopper: Thread = null

  locally {
    // Bind what spark-shell binds, quietly (these are not the user's statements), in as few compiler
    // runs as the interpreter allows: each costs a noticeable part of the start.
    imain.beQuietDuring {
      imain.bind("spark", "org.apache.spark.sql.SparkSession", spark, List("@transient"))
      imain.interpret(
        "@transient val sc = spark.sparkContext\n" +
          "import org.apache.spark.SparkContext._\n" +
          "import spark.implicits._\n" +
          "import spark.sql\n" +
          "import org.apache.spark.sql.functions._"
      )
    }
    val failed = reporter.problems.filter(_.severity == "error")
    if (failed.nonEmpty || reporter.failure.isDefined)
      throw new IllegalStateException(
        "the Scala interpreter could not bind spark and sc: " +
          (failed.map(_.message) ++ reporter.failure).mkString("; ")
      )
    reporter.clearStatement()
    out.reset()
    routeSystemStreams
  }

  /** Run one cell under `jobGroup` and answer JSON: status, one step per statement run, exception.
    *
    * Its top-level statements run one by one, as spark-shell and Livy run them: each gets its own
    * echo, a name may be defined again, and a case class is complete before a Dataset needs it (Spark
    * finds the REPL instance that encloses such a class only once that instance is built).
    */
  def run(code: String, jobGroup: String): String = synchronized {
    val steps = new java.util.ArrayList[java.util.Map[String, Any]]
    var status = "ok"
    var exception: Option[java.util.Map[String, Any]] = None
    cancelled = false
    val worker = new Thread(
      () => {
        Thread.currentThread.setContextClassLoader(imain.classLoader)
        spark.sparkContext.setJobGroup(jobGroup, "dli-kernel statement", interruptOnCancel = true)
        routed.set(console)
        try {
          val pieces = statements(code).iterator
          while (status == "ok" && pieces.hasNext) {
            val (firstLine, text) = pieces.next()
            if (cancelled) status = "cancelled"
            else {
              val (stepStatus, stepException) = runStatement(text, firstLine, steps)
              status = stepStatus
              exception = stepException
            }
          }
        } catch {
          // A stop that lands outside the user's code (it checks, but races) still ends the cell.
          case t: Throwable =>
            status = if (t.isInstanceOf[ThreadDeath]) "cancelled" else "error"
            exception = Some(describe(Some(t), stackTrace(t)))
        } finally {
          routed.remove()
          spark.sparkContext.clearJobGroup()
        }
      },
      "dli-scala-statement"
    )
    worker.setDaemon(true)
    running = worker
    try {
      worker.start()
      worker.join()
    } finally running = null
    val answer = new java.util.LinkedHashMap[String, Any]
    answer.put("status", status)
    answer.put("steps", steps)
    exception.foreach(answer.put("exception", _))
    json.writeValueAsString(answer)
  }

  private def runStatement(
      text: String,
      firstLine: Int,
      steps: java.util.List[java.util.Map[String, Any]]
  ): (String, Option[java.util.Map[String, Any]]) = {
    reporter.clearStatement()
    out.reset()
    val result = Console.withOut(console)(Console.withErr(console)(imain.interpret(text)))
    console.flush()
    writer.flush()
    // The REPL may fail to bind `lastException` (it does for a stopped thread); the previous one is
    // then still there, so it counts only if the trace the REPL printed is about it.
    val thrown = reporter.failure.flatMap { trace =>
      lastException.filter(t => trace.startsWith(reporter.unwrap(t.toString)))
    }
    val status = (reporter.failure, thrown) match {
      case (_, Some(_: ThreadDeath)) => "cancelled"
      case (Some(_), None) if cancelled => "cancelled"
      case (Some(_), _) => "error"
      case _ if result == Results.Success => "ok"
      case _ if result == Results.Incomplete => "incomplete"
      case _ => "error"
    }
    val step = new java.util.LinkedHashMap[String, Any]
    step.put("output", out.toString(UTF_8))
    step.put("echo", reporter.echo.toString)
    // Python drops the `val ` of these names' echo lines only, not of look-alike lines in a value.
    val defined = if (status == "ok" && imain.lastRequest != null) imain.lastRequest.definesTermNames else Nil
    step.put("defined", defined.asJava)
    step.put(
      "problems",
      reporter.problems.map { p =>
        Map[String, Any](
          "severity" -> p.severity,
          "line" -> (firstLine + p.line),
          "column" -> p.column,
          "line_content" -> p.lineContent,
          "message" -> p.message
        ).asJava
      }.asJava
    )
    steps.add(step)
    (status, reporter.failure.map(describe(thrown, _)))
  }

  /** An exception for Python: its class and message when known, and the trace the REPL printed. */
  private def describe(thrown: Option[Throwable], trace: String): java.util.Map[String, Any] = {
    val exception = new java.util.LinkedHashMap[String, Any]
    thrown.foreach { t =>
      exception.put("class", reporter.unwrap(t.getClass.getName)) // a class the user defined, unwrapped
      exception.put("message", Option(t.getMessage).getOrElse(""))
    }
    exception.put("trace", trace)
    exception
  }

  /** The cell's top-level statements as (lines before it, its text), a class and its companion object
    * together; the whole cell as one when it does not parse, so the interpreter reports why.
    */
  private def statements(code: String): Seq[(Int, String)] = {
    val global = imain.global
    val parsed =
      try Some(reporter.suppressOutput(global.newUnitParser(code, "<cell>").parseStats()))
      catch { case _: Exception => None }
    val usable = !reporter.hasErrors && parsed.exists(_.forall(_.pos.isRange))
    reporter.reset() // the interpreter reads the error count of its own compile runs
    reporter.clearStatement()
    if (!usable) return Seq((0, code))
    val trees = parsed.get
    if (trees.isEmpty) return Nil // nothing but comments and blank lines
    def companions(a: global.Tree, b: global.Tree): Boolean = (a, b) match {
      case (c: global.ClassDef, m: global.ModuleDef) => c.name.decoded == m.name.decoded
      case (m: global.ModuleDef, c: global.ClassDef) => c.name.decoded == m.name.decoded
      case _ => false
    }
    val ends = ArrayBuffer.empty[Int]
    trees.zipWithIndex.foreach { case (tree, i) =>
      if (i > 0 && companions(trees(i - 1), tree)) ends(ends.length - 1) = tree.pos.end
      else ends += tree.pos.end
    }
    if (ends.nonEmpty) ends(ends.length - 1) = code.length // trailing comments go with the last one
    val starts = 0 +: ends.init
    starts.zip(ends).map { case (start, end) =>
      // A `;` left between two statements on one line becomes a space, keeping error columns right.
      val chunk = code.substring(start, end)
      val lead = chunk.takeWhile(c => c == ';' || c.isWhitespace).replace(';', ' ')
      (code.substring(0, start).count(_ == '\n'), lead + chunk.substring(lead.length))
    }.toSeq
  }

  // The REPL binds the exception of a failed statement to `lastException`, unwrapped from the
  // reflection and initializer errors it arrives in.
  private def lastException: Option[Throwable] =
    try imain.valueOfTerm("lastException").collect { case t: Throwable => t }
    catch { case _: Exception => None }

  private def stackTrace(t: Throwable): String = {
    val text = new java.io.StringWriter
    t.printStackTrace(new PrintWriter(text))
    text.toString
  }

  /** Cancel the running cell: none of its further statements runs, and once its thread runs the user's
    * code it is interrupted and, if still there after `graceMs`, stopped.
    */
  def cancel(graceMs: Long): Unit = {
    val target = running
    if (target == null) return
    cancelled = true
    if (stopper == null || !stopper.isAlive) {
      stopper = new Thread(() => stopLater(target, graceMs), "dli-scala-stopper")
      stopper.setDaemon(true)
      stopper.start()
    }
  }

  @nowarn("cat=deprecation")
  private def stopLater(target: Thread, graceMs: Long): Unit = {
    // A statement waiting on Spark jobs ends by itself once its job group is cancelled, with Spark's
    // own message; give it that chance before touching the thread.
    target.join(JobCancelGraceMs)
    var interrupted = false
    while (target.isAlive && running == target) {
      // Touch the thread only while it runs the user's own classes: an interrupt or a stop inside the
      // compiler could leave the interpreter unusable for the next statement.
      if (!target.getStackTrace.exists(_.getClassName.startsWith("$line"))) target.join(100)
      else if (!interrupted) {
        target.interrupt()
        interrupted = true
        target.join(graceMs)
      } else {
        target.stop()
        target.join(graceMs)
      }
    }
  }

  /** Completion candidates at `cursor`: JSON with the offset they replace from and their names. */
  def complete(code: String, cursor: Int): String = synchronized {
    val result = new ReplCompletion(imain).complete(code, cursor, filter = true)
    val answer = new java.util.LinkedHashMap[String, Any]
    answer.put("cursor", result.cursor)
    answer.put("candidates", result.candidates.map(_.name).distinct.asJava)
    json.writeValueAsString(answer)
  }
}
